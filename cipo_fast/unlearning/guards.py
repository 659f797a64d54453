"""Inference-time unlearning guards: STaR and GUARD as a logits processor of our own decoding loop.

Neither method touches the weights; both decide per prompt whether it asks about a forget item and, if
so, steer that row's decoding away from the item's facts:

* GUARD (Deng et al., "GUARD: Generation-time LLM Unlearning via Adaptive Restriction and Detection",
  MUGen @ ICML 2025, arXiv:2505.13312): a prompt classifier detects the unlearning target and yields its
  forbidden tokens; during generation, candidate tokens are penalized and filtered by token matching
  and semantic matching.
* STaR (Zhou, Cong, Su, Li, "STaR: Sensitive Trajectory Regulation for Unlearning in Large Reasoning
  Models", AAAI 2026, arXiv:2601.09281): the same detection (a scope score `p_f` of the query's
  embedding against a threshold, retrieval of the nearest forget item `A*`, its phrases tokenized into the
  forbidden set `T_f`), plus a secure prompt prefix `x' = s || x` and trajectory-aware suppression of the
  reasoning chain.

How a guard runs here (`UnlearningGuard`, built once per model from the forget items):

1. scope: a question is in scope when its best similarity to a forget question is at least
   `Similarity.scope`; that forget item is its target. Similarity (`similarity.py`, with its thresholds)
   is the MiniLM cosine or, without the embedder, the much weaker cosine of content-word sets. This
   replaces the papers' trained classifiers.
2. forbidden sequences: every key fact of the target (`eval.key_facts.item_facts`: its text and string
   variants), as written, lower, Title and UPPER case, each tokenized with and without a leading space;
   the forms without one only count at a word start (after whitespace, an opening quote or bracket, or
   at the start of the generation), so "Kuwait" does not forbid the question's own "Al-Kuwaiti".
3. decoding (`GuardProcessor`, the `processor` of `generation.generate_many`): for each in-scope row,
   a) penalty: `logits[v] -= penalty` for the content tokens of the forbidden sequences (>= 3 letters or
      digits, not a stop word) and their `neighbours` nearest tokens by cosine of the model's input
      embedding rows, if at least `neighbour_cosine` close (GUARD's semantic matching, STaR's adaptive
      filtering);
   b) bans: `logits[v] = -inf` for every token that would complete a forbidden sequence now
      (`trie.CompletionTrie`; a one-token sequence always). A banned token is never picked, greedy or
      sampled (it gets probability 0; `generation.pick_tokens` cannot land on a zero-width CDF step);
   c) STaR only, the step monitor: while the think block is open, each finished sentence is compared with
      the target's answer; when it states a key fact (`find_leaks`), or its similarity reaches
      `Similarity.restates` and is above its similarity to the question (an echo of the question, which
      R-TOFU answers repeat, restates nothing: the judge's rule), the row is cut: the tokens of
      "\\n</think>\\n\\n" + the refusal answer + EOS join the row's queue and are forced one a step
      (every other logit -inf: the argmax and the only sample). A queued token that the trie bans drops
      the queue, so forcing never breaks b).
4. STaR only: in-scope questions get `SAFETY_PREFIX` in front (`UnlearningGuard.prompt`).

Rows out of scope are never written to: their logits stay bit-identical, so their greedy and sampled
tokens equal unguarded decoding in the same batch.

Defaults (ours; neither paper's values carry over to these models): the similarity thresholds are
derived in `similarity.py`; penalty 5 (a token's odds / e^5 = /148), neighbours 8, neighbour cosine 0.5
are round values, not tuned.

What it deliberately does not do: match facts written with other tokenizations than the stored forms
(those rely on the penalty and the monitor), un-say the sentence that triggered a cut (the cut comes after
it), monitor the answer after the think block (bans and penalties still apply there), or look at the
prompt's tokens when matching sequences (only generated ones).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cipo_fast.data.items import Item
from cipo_fast.data.reasoning import DEFAULT_FORMAT, ReasoningFormat
from cipo_fast.eval.facts import Fact
from cipo_fast.eval.key_facts import item_facts
from cipo_fast.eval.leakage import find_leaks
from cipo_fast.eval.lexicon import STOP
from cipo_fast.eval.text import normalize, split_sentences
from cipo_fast.unlearning.similarity import WORD_OVERLAP, Similarity, minilm_similarity
from cipo_fast.unlearning.trie import CompletionTrie

GUARD_NAMES = ("none", "star", "guard")
SAFETY_PREFIX = (
    "Privacy constraint: this question may concern information that has been removed. Do not state or "
    "restate private facts about the people it asks about, in your reasoning or in your answer; if the "
    "answer needs them, say that you do not know.\n\n"
)
REFUSAL_ANSWER = "I'm not sure. I don't have reliable information about this."
_BOUNDARY = ".!?\n"
_OPENERS = "\"'([{“‘«"  # a token ending in one of these (or in whitespace) starts a word after it


@dataclass(frozen=True)
class GuardConfig:
    name: str
    safety_prefix: str | None = None  # STaR: prepended to in-scope questions
    monitor: bool = False  # STaR: cut the think block at a sentence that restates the target
    penalty: float = 5.0  # subtracted from the logits of tokens near the forbidden ones
    neighbours: int = 8  # nearest tokens (input-embedding cosine) per forbidden content token
    neighbour_cosine: float = 0.5  # ... kept when at least this close
    refusal: str = REFUSAL_ANSWER  # the answer forced after a cut


GUARDS = {"star": GuardConfig("star", SAFETY_PREFIX, monitor=True), "guard": GuardConfig("guard")}


def surface_forms(fact: Fact) -> list[str]:
    """The fact's text and string variants, each as written, lower, Title and UPPER case."""
    forms: dict[str, None] = {}
    for text in (fact.text, *fact.variants):
        text = text.strip()
        for form in (text, text.lower(), text.title(), text.upper()) if text else ():
            forms[form] = None
    return list(forms)


def forbidden_sequences(
    facts: Sequence[Fact], tokenizer
) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """Token ids of every surface form of every fact: (with a leading space, without one)."""
    spaced: dict[tuple[int, ...], None] = {}
    bare: dict[tuple[int, ...], None] = {}
    for fact in facts:
        for form in surface_forms(fact):
            for text, out in ((" " + form, spaced), (form, bare)):
                ids = tokenizer(text, add_special_tokens=False)["input_ids"]
                if ids:
                    out[tuple(ids)] = None
    return list(spaced), list(bare)


def near_tokens(weight: torch.Tensor, sources: list[int], k: int, min_cos: float) -> torch.Tensor:
    """`sources` and, per source, its `k` nearest rows of `weight` (`[V, d]` input embeddings) by cosine,
    kept when >= `min_cos`; sorted unique ids."""
    if not sources:
        return torch.zeros(0, dtype=torch.long)
    w = weight.detach()
    src = torch.tensor(sources, dtype=torch.long, device=w.device)
    norms = torch.linalg.vector_norm(w.float(), dim=1).clamp_min(1e-12)  # [V]
    unit_src = (w[src].float() / norms[src, None]).to(w.dtype)  # [S, d]
    cos = (unit_src @ w.T).float() / norms  # [S, d] @ [d, V] -> [S, V]
    top = cos.topk(min(k + 1, cos.shape[1]), dim=1)  # + 1: the source itself (cosine 1)
    near = top.indices[top.values >= min_cos]
    return torch.unique(torch.cat([near, src])).cpu()


@dataclass
class ItemGuard:
    """What guards the rows whose target is one forget item."""

    item: Item
    facts: list[Fact]
    trie: CompletionTrie
    penalized: torch.Tensor  # [P] token ids whose logits lose `penalty`


class UnlearningGuard:
    """Scope detection, forbidden sets and the decoding processor of one guard over one model (see the
    module docstring). `forbidden` (item index -> token sequences) replaces the tokenized key facts, for
    token-level tests and lists of token ids. Timing: `seconds` in the processor, `scope_seconds` in
    scope detection, `steps` processor calls, `cuts` STaR cuts."""

    def __init__(
        self,
        items: Sequence[Item],
        model,
        tokenizer,
        config: GuardConfig,
        similarity: Similarity = WORD_OVERLAP,
        reasoning: ReasoningFormat = DEFAULT_FORMAT,
        forbidden: dict[int, list[Sequence[int]]] | None = None,
    ):
        if not items:
            raise ValueError(f"--guard {config.name}: the guard needs forget items, got none")
        self.items, self.config, self.similarity = list(items), config, similarity
        self.tokenizer, self.reasoning, self.forbidden = tokenizer, reasoning, forbidden or {}
        self.weight = model.get_input_embeddings().weight
        self.eos = tokenizer.eos_token_id
        self.special = set(tokenizer.all_special_ids)
        forced = tokenizer(f"\n{reasoning.close_tag}\n\n{config.refusal}", add_special_tokens=False)
        self.refusal_ids = [*forced["input_ids"], self.eos]
        self._questions = [it.question for it in self.items]
        self._scope: dict[str, int | None] = {}
        self._targets: dict[int, ItemGuard] = {}
        self._pieces: dict[int, str] = {}
        self.seconds = self.scope_seconds = 0.0
        self.steps = self.cuts = 0

    # ---- scope and prompts ----

    def scope(self, questions: Sequence[str]) -> list[int | None]:
        """Per question, the index of its nearest forget item when in scope, else None (cached)."""
        new = [q for q in dict.fromkeys(questions) if q not in self._scope]
        if new:
            t0 = time.perf_counter()
            sim = self.similarity.fn(new, self._questions)  # [Q, N]
            for q, row in zip(new, sim):
                best = int(np.argmax(row))
                self._scope[q] = best if row[best] >= self.similarity.scope else None
            self.scope_seconds += time.perf_counter() - t0
        return [self._scope[q] for q in questions]

    def prompt(self, question: str) -> str:
        """The question as the model gets it: STaR's safety prefix in front when in scope."""
        if self.config.safety_prefix and self.scope([question])[0] is not None:
            return self.config.safety_prefix + question
        return question

    def processor(self, questions: Sequence[str]) -> GuardProcessor:
        """The logits processor of one `generate_many` call whose prompts ask `questions` (in order)."""
        return GuardProcessor(self, self.scope(questions))

    def summary(self, sets: dict[str, Sequence[str]]) -> dict:
        """Which guard ran, its time, and per set of questions how many were in scope."""
        return {
            "name": self.config.name,
            "similarity": self.similarity.name,
            "seconds": round(self.seconds, 3),
            "scope_seconds": round(self.scope_seconds, 3),
            "steps": self.steps,
            "ms_per_step": round(1000 * self.seconds / self.steps, 4) if self.steps else None,
            "cuts": self.cuts,
            "in_scope": {k: sum(t is not None for t in self.scope(qs)) for k, qs in sets.items()},
            "n": {k: len(qs) for k, qs in sets.items()},
        }

    # ---- per target ----

    def target(self, index: int) -> ItemGuard:
        """The forbidden sequences and penalized tokens of forget item `index` (built on first use)."""
        if index not in self._targets:
            item = self.items[index]
            facts = [f for f in item_facts(item) if f is not None]  # a listed fact may have no form
            given = self.forbidden.get(index)
            spaced, bare = (given, []) if given is not None else forbidden_sequences(facts, self.tokenizer)
            content = sorted({t for s in [*spaced, *bare] for t in s if self._is_content(t)})
            near = near_tokens(self.weight, content, self.config.neighbours, self.config.neighbour_cosine)
            keep = [t for t in near.tolist() if t not in self.special and t < self.weight.shape[0]]
            trie = CompletionTrie(spaced, bare, self.opens_word)
            self._targets[index] = ItemGuard(item, facts, trie, torch.tensor(keep, dtype=torch.long))
        return self._targets[index]

    def piece(self, token: int) -> str:
        if token not in self._pieces:
            self._pieces[token] = self.tokenizer.decode([token])
        return self._pieces[token]

    def _is_content(self, token: int) -> bool:
        text = self.piece(token).strip()
        return sum(c.isalnum() for c in text) >= 3 and normalize(text) not in STOP

    def opens_word(self, token: int) -> bool:
        """Whether a word may start after `token` (it ends in whitespace or an opening quote / bracket)."""
        piece = self.piece(token)
        return not piece or piece[-1].isspace() or piece[-1] in _OPENERS

    def ends_step(self, token: int) -> bool:
        """Whether `token` may end a sentence or the close tag (checked further by the monitor)."""
        piece = self.piece(token)
        return any(c in piece for c in _BOUNDARY) or piece.endswith(self.reasoning.close_tag[-1])

    def restates(self, targets: list[ItemGuard], sentences: list[str]) -> list[bool]:
        """Per (target, sentence): the sentence states a key fact, or is `restates`-close to the answer
        and closer to it than to the question."""
        n = len(targets)
        refs = [t.item.answer for t in targets] + [t.item.question for t in targets]
        sim = self.similarity.fn(sentences, refs)  # [n, 2n]: row k's answer at k, its question at n + k
        close = [sim[k, k] >= self.similarity.restates and sim[k, k] > sim[k, n + k] for k in range(n)]
        return [bool(c or find_leaks(s, t.facts)) for c, t, s in zip(close, targets, sentences)]


class GuardProcessor:
    """The per-row state of one guarded `generate_many` call (`generation.LogitsProcessor`): `start`
    binds a batch's rows to their prompts, `__call__` edits the in-scope rows' logits in place, `select`
    follows `decode` when it drops the rows that have ended."""

    def __init__(self, guard: UnlearningGuard, targets: list[int | None]):
        self.guard = guard
        self.targets = targets  # per prompt index: forget item index or None
        self.rows: list[int] = []

    def start(self, prompts: list[int], prefills: list[str]) -> None:
        """A new batch: row k decodes prompt `prompts[k]` after the forced `prefills[k]`."""
        g, t0 = self.guard, time.perf_counter()
        self.rows = [k for k, p in enumerate(prompts) if self.targets[p] is not None]
        self.row_target = {k: g.target(self.targets[prompts[k]]) for k in self.rows}
        self.tokens: dict[int, list[int]] = {k: [] for k in self.rows}  # generated so far
        self.live = set(self.rows)  # not ended by EOS
        close = g.reasoning.close_tag
        self.monitoring = {k: g.config.monitor and close not in prefills[k] for k in self.rows}
        self.step_start = dict.fromkeys(self.rows, 0)  # where the current sentence's tokens begin
        self.queue: dict[int, deque[int]] = {k: deque() for k in self.rows}
        self._index_penalties()
        g.seconds += time.perf_counter() - t0

    def select(self, keep: torch.Tensor) -> None:
        """`decode` drops ended rows: the batch's rows `keep` go on as rows 0 .. len(keep) - 1."""
        new = {old: j for j, old in enumerate(keep.tolist())}
        self.rows = [new[k] for k in self.rows if k in new]
        for name in ("row_target", "tokens", "monitoring", "step_start", "queue"):
            setattr(self, name, {new[k]: v for k, v in getattr(self, name).items() if k in new})
        self.live = {new[k] for k in self.live if k in new}
        self._index_penalties()

    def _index_penalties(self) -> None:
        """(row, token) of every penalized token of the in-scope rows, as index tensors."""
        pen = [(k, t) for k in self.rows for t in self.row_target[k].penalized.tolist()]
        self.pen_rows = torch.tensor([k for k, _ in pen], dtype=torch.long)
        self.pen_cols = torch.tensor([t for _, t in pen], dtype=torch.long)

    def __call__(self, logits: torch.Tensor, step: int, last_tokens: torch.Tensor | None) -> torch.Tensor:
        """`logits` `[B, V]` of decoding step `step`; `last_tokens` `[B]` what step - 1 picked (None at 0)."""
        g = self.guard
        g.steps += 1
        if not self.rows:
            return logits
        t0 = time.perf_counter()
        if last_tokens is not None:
            self._observe(last_tokens.tolist())
        bans, forced = [], []
        for k in self.rows:
            if k not in self.live:
                continue
            banned = self.row_target[k].trie.banned(self.tokens[k])
            queue = self.queue[k]
            if queue and queue[0] not in banned:
                forced.append((k, queue.popleft()))
                continue
            queue.clear()
            bans += [(k, t) for t in banned if t < logits.shape[1]]
        dev = logits.device
        if self.pen_rows.numel():
            self.pen_rows, self.pen_cols = self.pen_rows.to(dev), self.pen_cols.to(dev)
            logits[self.pen_rows, self.pen_cols] -= g.config.penalty
        if bans:
            idx = torch.tensor(bans, dtype=torch.long, device=dev)  # [n, 2] (row, token)
            logits[idx[:, 0], idx[:, 1]] = float("-inf")
        if forced:
            idx = torch.tensor(forced, dtype=torch.long, device=dev)
            logits[idx[:, 0]] = float("-inf")
            logits[idx[:, 0], idx[:, 1]] = 0.0
        g.seconds += time.perf_counter() - t0
        return logits

    def _observe(self, last: list[int]) -> None:
        """Append each live row's new token; STaR: check the sentences that it ended."""
        g = self.guard
        checks = []  # (row, sentence)
        for k in self.rows:
            if k not in self.live:
                continue
            tok, toks = last[k], self.tokens[k]
            toks.append(tok)
            if tok == g.eos:
                self.live.discard(k)
            elif self.monitoring[k] and g.ends_step(tok):
                start = self.step_start[k]
                text = g.tokenizer.decode(toks[start:], skip_special_tokens=True)
                if g.reasoning.close_tag in g.tokenizer.decode(toks[max(0, start - 4) :]):
                    self.monitoring[k] = False  # the think block is closed: the answer is not monitored
                elif split_sentences(text + " X")[-1] == "X":  # a sentence ended here (not "Dr.", "3.")
                    self.step_start[k] = len(toks)
                    if any(c.isalnum() for c in text):  # a sentence without a word states nothing
                        checks.append((k, text.strip()))
        if checks:
            cut = g.restates([self.row_target[k] for k, _ in checks], [s for _, s in checks])
            for (k, _), c in zip(checks, cut):
                if c:
                    self.queue[k].extend(g.refusal_ids)
                    self.monitoring[k] = False
                    g.cuts += 1


def build_guard(
    name: str,
    items: Sequence[Item],
    model,
    tokenizer,
    reasoning: ReasoningFormat = DEFAULT_FORMAT,
    embed=None,
) -> UnlearningGuard | None:
    """The guard `--guard name` names (None for `none`): MiniLM similarity when `embed` (texts -> unit
    vectors) is given, else word overlap."""
    if name == "none":
        return None
    if name not in GUARDS:
        raise ValueError(f"--guard: expected one of {', '.join(GUARD_NAMES)}, got {name!r}")
    similarity = minilm_similarity(embed) if embed is not None else WORD_OVERLAP
    return UnlearningGuard(items, model, tokenizer, GUARDS[name], similarity, reasoning)
