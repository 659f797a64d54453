"""Batched generation under named decoding strategies, for evaluation and for CiPO's sampling rounds.

A strategy is a temperature, a number of samples and an optional prefill forced at the start of the
assistant turn:

    greedy        T = 0, one sample
    sample_t0.7   T = 0.7, k samples
    sample_t1.0   T = 1.0, k samples
    zerothink     the think block forced empty:  "<think>\\n\\n</think>\\n\\n"
    lessthink     the think block opened and closed with one line:
                  "<think>\\nOkay, the user asked this, I can answer it without thinking much.\\n</think>\\n\\n"

Samples of all requested strategies are rows of the same left-padded batches (`generate_many`; each row
has its prefill and temperature), sorted by length and decoded by `decode`: a preallocated KV cache whose
filled positions alone are attended, last-position logits only, inverse-CDF sampling, and rows that
have ended dropped from the batch. Each batch draws from its own generator seeded from (seed,
strategies, batch index), so the same call gives the same text and the global RNG is not touched.
Returned texts include the prefill, so `ReasoningFormat.split` sees the whole think block.

Under a process group (`cipo_fast.train.distributed.generating`) the batches are dealt out to the ranks
(batch b to rank b mod N), each rank decodes its own with the full weights and no collective, and the
texts are gathered: each batch has the same rows and the same generator as in one process, so the texts
are the same as one process's. `BATCH_SPLIT` holds the split while `generating` is active.

An optional logits processor (`LogitsProcessor`, e.g. `cipo_fast.unlearning.guards.GuardProcessor`) edits
each step's logits before `pick_tokens`. Rows are reordered into batches, so `generate_many` tells it, per
batch, which prompt index and prefill each row has. Without one, decoding is exactly as described above.
"""

from __future__ import annotations

import hashlib
import warnings
import zlib
from contextlib import nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

import torch

from cipo_fast.data.reasoning import DEFAULT_FORMAT, ReasoningFormat


@dataclass(frozen=True)
class BatchSplit:
    """Batches dealt out over the ranks of a process group: this rank's place and the collective that
    returns every rank's object, in rank order."""

    rank: int
    size: int
    gather: object  # obj -> [obj of rank 0, obj of rank 1, ...]


BATCH_SPLIT: ContextVar[BatchSplit | None] = ContextVar("BATCH_SPLIT", default=None)

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


def make_strategies(names, samples: int = 2, reasoning: ReasoningFormat = DEFAULT_FORMAT) -> list[Strategy]:
    """Strategies by name; an unknown name is a ValueError listing the valid ones. The prefills are
    `reasoning`'s think blocks, so they match what the evaluation splits."""
    table = {
        "greedy": Strategy("greedy"),
        "sample_t0.7": Strategy("sample_t0.7", 0.7, samples),
        "sample_t1.0": Strategy("sample_t1.0", 1.0, samples),
        "zerothink": Strategy("zerothink", prefill=reasoning.think_block("")),
        "lessthink": Strategy("lessthink", prefill=reasoning.think_block(LESSTHINK_LINE)),
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
    batch_size: int = 128  # rows per batch (prompts x samples, all strategies); large batches amortize a step
    seed: int = 0
    autocast: torch.dtype | None = None  # decode under this autocast (a run's training precision), or none
    compact: bool = True  # rows that have ended leave their batch (`decode(compact=...)`)
    compact_at: float = 0.25  # ... once this share of the rows still decoding has ended (`decode`)
    filled_only: bool = True  # attention reads the cache's filled positions only (`decode(filled_only=...)`)

    def __post_init__(self):
        if not 0.0 <= self.compact_at <= 1.0:
            raise ValueError(f"GenConfig.compact_at: expected a share in [0, 1], got {self.compact_at}")


def pick_tokens(
    logits: torch.Tensor, temperatures: torch.Tensor, generator=None, uniforms: torch.Tensor | None = None
) -> torch.Tensor:
    """Next token per row: the argmax where the row's temperature is 0, else a sample of
    softmax(logits / T) drawn by inverse CDF (one uniform per row: a cumulative sum and a binary search,
    where `torch.multinomial` draws an exponential per vocabulary entry: ~3x the step's LM head here).
    The uniforms are drawn from `generator`, one per sampled row in row order, unless `uniforms` `[B, 1]`
    gives each row's."""
    out = logits.argmax(-1)
    hot = temperatures > 0
    if bool(hot.any()):
        rows = hot.nonzero().squeeze(1)
        probs = torch.softmax(logits[rows].float() / temperatures[rows, None], dim=-1)
        cdf = probs.cumsum(-1)
        if uniforms is None:
            uniforms = torch.zeros((logits.shape[0], 1), device=logits.device)
            uniforms[rows] = torch.rand((rows.numel(), 1), generator=generator, device=logits.device)
        u = uniforms[rows] * cdf[:, -1:]
        picked = torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_max(logits.shape[-1] - 1)
        out[rows] = picked
    return out


class LogitsProcessor(Protocol):
    """What `decode` / `generate_many` accept as `processor`. One processor serves one `generate_many`
    call over jobs that share their prompt list (it is keyed by the prompt index)."""

    def start(self, prompts: list[int], prefills: list[str]) -> None:
        """A new batch: row k decodes prompt index `prompts[k]` after the forced text `prefills[k]`."""

    def __call__(self, logits: torch.Tensor, step: int, last_tokens: torch.Tensor | None) -> torch.Tensor:
        """The logits `[B, V]` to pick step `step`'s tokens from (may edit `logits` in place);
        `last_tokens` `[B]` are the tokens step - 1 picked (`pad_id` for ended rows), None at step 0."""


@torch.no_grad()
def decode(
    model,
    ids: torch.Tensor,
    mask: torch.Tensor,
    temperatures: torch.Tensor,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    generator=None,
    processor: LogitsProcessor | None = None,
    share_prefill: bool = True,
    compact: bool = True,
    filled_only: bool = True,
    compact_at: float = 0.25,
) -> torch.Tensor:
    """New tokens `[B, <= max_new_tokens]` for left-padded prompts `ids`/`mask` `[B, W]`, each row at its
    own temperature; rows after their EOS hold `pad_id`; stops when every row has ended. `processor`
    (already `start`ed for these rows) edits each step's logits before the tokens are picked.

    The KV cache is allocated once for `W + max_new_tokens` positions (no per-step concatenation, which
    costs as much as the LM head in transformers' growing cache at this size) and, with `filled_only`,
    each step attends over the positions filled so far, not the whole allocation
    (`decode_cache.decode_cache`); only the last position's logits are computed. With `share_prefill`,
    rows with the same prompt (the samples of one question, strategies without a prefill of their own)
    are prefilled once and their cache rows copied (`Cache.reorder_cache`, transformers' beam-search
    reordering), so a batch of k samples per prompt runs 1/k of the prompt tokens through the model.

    Rows that have ended leave the batch (`compact`): once `compact_at` of the rows still decoding (a
    quarter; 0: at every row that ends) have met their EOS, the others' cache rows, masks and positions
    are selected (`Cache.reorder_cache` again) and later steps run on them only -- a batch mixes
    ZeroThink answers of ~50 tokens with traces of ~600, and a CPU step costs in proportion to its rows. Each step still draws one uniform per sampled row of
    the whole batch, so the tokens are those of the full-batch decode. A `processor` keeps its rows (it
    is keyed by row) unless it has `select(keep)` to follow the selection."""
    from cipo_fast.model.decode_cache import decode_cache

    # transformers >= 5.23 renames `past_key_values` to `cache` (FutureWarning); older 5.x only know the
    # former, and an unknown keyword would be swallowed by **kwargs, i.e. decoding without the cache
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*`past_key_values` is deprecated", category=FutureWarning
        )
        b, w = ids.shape
        device = ids.device
        cache = decode_cache(model.config, w + max_new_tokens, filled_only)
        pos = (mask.cumsum(-1) - 1).clamp_min(0)
        full_mask = torch.cat((mask, torch.zeros(b, max_new_tokens, dtype=mask.dtype, device=device)), 1)
        rows = None  # the prompt each row decodes from, when some rows share one
        if share_prefill and b > 1:
            uniq, inverse = torch.unique(torch.cat((ids, mask.to(ids.dtype)), 1), dim=0, return_inverse=True)
            if uniq.shape[0] < b:
                rows = inverse
                # one row of each prompt (the rows of a prompt are equal, so any one)
                first = torch.zeros(uniq.shape[0], dtype=torch.long, device=device)
                first.scatter_(0, inverse, torch.arange(b, device=device))
        pre = slice(None) if rows is None else first  # the prefill's rows
        logits = model(
            input_ids=ids[pre],
            attention_mask=full_mask[pre, :w],
            position_ids=pos[pre],
            past_key_values=cache,
            use_cache=True,
            cache_position=torch.arange(w, device=device),
            logits_to_keep=1,
        ).logits[:, -1]
        if rows is not None:  # every row gets its prompt's cache and next-token logits
            cache.reorder_cache(rows)
            logits = logits.index_select(0, rows)
        nxt_pos = pos[:, -1:] + 1
        done = torch.zeros(b, dtype=torch.bool, device=device)
        out = torch.full((b, max_new_tokens), pad_id, dtype=torch.long, device=device)
        alive = torch.arange(b, device=device)  # the batch row each row still decoding is
        hot = temperatures > 0
        draw = (hot.cumsum(0) - 1).clamp_min(0)  # each row's place among the step's uniforms
        n_hot = int(hot.sum())
        select = None if processor is None else getattr(processor, "select", None)
        compact = compact and (processor is None or select is not None)
        last = None
        steps = 0
        for t in range(max_new_tokens):
            if processor is not None:
                logits = processor(logits, t, last)
            uniforms = None
            if n_hot:  # the full batch's draws, whichever rows are left
                uniforms = torch.rand((n_hot, 1), generator=generator, device=device)[draw[alive]]
            tok = pick_tokens(logits, temperatures[alive], uniforms=uniforms)
            tok = torch.where(done, torch.full_like(tok, pad_id), tok)
            out[alive, t] = last = tok
            steps = t + 1
            done |= tok == eos_id
            if bool(done.all()) or t == max_new_tokens - 1:
                break
            ended = int(done.sum())
            if compact and ended and ended >= compact_at * done.numel():
                keep = (~done).nonzero().squeeze(1)
                cache.reorder_cache(keep)
                alive, done, tok, last = alive[keep], done[keep], tok[keep], last[keep]
                full_mask, nxt_pos = full_mask[keep], nxt_pos[keep]
                if select is not None:
                    select(keep)
            full_mask[:, w + t] = 1
            logits = model(
                input_ids=tok[:, None],
                attention_mask=full_mask[:, : w + t + 1],
                position_ids=nxt_pos,
                past_key_values=cache,
                use_cache=True,
                cache_position=torch.tensor([w + t], device=device),
                logits_to_keep=1,
            ).logits[:, -1]
            nxt_pos = nxt_pos + 1
        return out[:, :steps]


def generate(
    model,
    tokenizer,
    prompts: list[str],
    strategy: Strategy,
    cfg: GenConfig,
    *,
    chat: bool = True,
    progress: str | None = None,
    processor: LogitsProcessor | None = None,
) -> list[list[str]]:
    """`strategy.samples` completions per prompt text (already chat-formatted when `chat`)."""
    jobs = [(prompts, strategy)]
    return generate_many(model, tokenizer, jobs, cfg, chat=chat, progress=progress, processor=processor)[0]


@torch.no_grad()
def generate_many(
    model,
    tokenizer,
    jobs: list[tuple[list[str], Strategy]],
    cfg: GenConfig,
    *,
    chat: bool = True,
    progress: str | None = None,
    processor: LogitsProcessor | None = None,
) -> list[list[list[str]]]:
    """Completions for several (prompts, strategy) jobs at once: `out[job][prompt]` is that prompt's
    `strategy.samples` texts. Every sample of every job is one row; rows of all jobs share batches (each
    row with its strategy's prefill and temperature), so a decoding step streams the weights once for
    all strategies. On a CPU a 135M model's decoding step is bound by reading its weights, so this is
    what makes sampling several strategies cheap. `processor` (a `LogitsProcessor`) is started per batch
    with its rows' prompt indices and prefills. With `cfg.autocast` every batch decodes under one autocast
    region, so each weight is cast once per call (autocast's cast cache)."""
    assert processor is None or len({len(p) for p, _ in jobs}) <= 1, (
        "a processor is keyed by prompt index: its jobs must share one prompt list"
    )

    device = next(model.parameters()).device
    rows = [  # (job, prompt index, prefill, temperature, token ids)
        (
            j,
            i,
            st.prefill,
            st.temperature,
            tokenizer(p + st.prefill, add_special_tokens=not chat)["input_ids"],
        )
        for j, (prompts, st) in enumerate(jobs)
        for i, p in enumerate(prompts)
        for _ in range(st.samples)
    ]
    order = sorted(range(len(rows)), key=lambda r: -len(rows[r][4]))
    out: list[list[list[str]]] = [[[] for _ in prompts] for prompts, _ in jobs]
    was_training = model.training
    model.eval()
    batches = [order[k : k + cfg.batch_size] for k in range(0, len(order), cfg.batch_size)]
    salt = zlib.crc32("|".join(st.name for _, st in jobs).encode())
    texts: dict[int, str] = {}
    split = BATCH_SPLIT.get()
    if split is not None:
        _same_rows_on_every_rank(split, rows)
        progress = progress if split.rank == 0 else None
    with torch.autocast(device.type, dtype=cfg.autocast) if cfg.autocast else nullcontext():
        _decode_batches(model, tokenizer, rows, batches, cfg, salt, split, progress, processor, texts)
    if split is not None:
        texts = {r: t for part in split.gather(texts) for r, t in part.items()}
    for r, (j, i, *_rest) in enumerate(rows):  # rows are in (job, prompt, sample) order
        out[j][i].append(texts[r])
    model.train(was_training)
    return out


def _decode_batches(model, tokenizer, rows, batches, cfg, salt, split, progress, processor, texts) -> None:
    """Decode `batches` (lists of row indices) of `generate_many`'s rows into `texts[row]`."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for b, idx in enumerate(tqdm(batches, desc=progress, disable=progress is None, leave=False)):
        if split is not None and b % split.size != split.rank:
            continue
        ids, mask = left_pad([rows[r][4] for r in idx], pad)
        temps = torch.tensor([rows[r][3] for r in idx], dtype=torch.float32, device=device)
        gen = torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + salt + b)
        if processor is not None:
            processor.start([rows[r][1] for r in idx], [rows[r][2] for r in idx])
        new = decode(
            model,
            ids.to(device),
            mask.to(device),
            temps,
            cfg.max_new_tokens,
            tokenizer.eos_token_id,
            pad,
            gen,
            processor,
            compact=cfg.compact,
            filled_only=cfg.filled_only,
            compact_at=cfg.compact_at,
        ).cpu()
        for k, r in enumerate(idx):
            texts[r] = rows[r][2] + tokenizer.decode(new[k], skip_special_tokens=True)


def left_pad(encodings: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> (ids, attention mask) `[B, longest]`, left-padded with `pad_id` as `decode` takes them."""
    width = max(map(len, encodings))
    ids = torch.full((len(encodings), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encodings), width), dtype=torch.long)
    for k, enc in enumerate(encodings):
        ids[k, width - len(enc) :], mask[k, width - len(enc) :] = torch.tensor(enc), 1
    return ids, mask


def _same_rows_on_every_rank(split: BatchSplit, rows: list) -> None:
    """Every rank must have been asked for the same rows (their batches are merged by row index); a rank
    whose inputs differ would silently mix another rank's texts in, so it fails here instead."""
    digest = hashlib.blake2b(repr([(r[0], r[1], r[2], r[3], r[4]) for r in rows]).encode()).hexdigest()
    digests = split.gather(digest)
    if len(set(digests)) != 1:
        raise RuntimeError(
            f"generation under a process group: the ranks were asked for different rows ({len(rows)} rows "
            f"on rank {split.rank}); every rank must generate for the same prompts and strategies"
        )
