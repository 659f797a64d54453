"""Packing tokenized sequences into flat, padding-free micro-batches under a token budget.

A micro-batch is one token stream holding several sequences back to back:

    input_ids    [T]    the concatenated sequences
    position_ids [T]    restarting at 0 for every sequence
    targets      [T]    input_ids shifted left inside each sequence (the token each position predicts)
    loss_mask    [T]    True where the target is a completion token (EOS included)
    seq_ids      [T]    which of the micro-batch's sequences a position belongs to
    cu_seqlens   [K+1]  attention segment boundaries (int32), for varlen attention
    prefixes     [K, 2] per segment, a stream range its queries also attend to (empty: [0, 0])
    shared_ids   [T]    a second sequence a position also belongs to (S = none), see prefix sharing
    pairs        [P, 2] (chosen, rejected) sequence indices, for preference data

Prefix sharing (`share_prefix=True`): chosen and rejected sequences of a pair start with the same prompt,
and in CiPO often with the same reasoning (a redirect keeps the leak-free start of the leaking trace; an
answer-only pair shares the prompt and its forced think block). With a common prefix of `c` tokens, the
first `s = c - 1` are stored once and each side continues from token `s` (position `s` predicts token
`s + 1`, which differs between the sides, so position `s` is stored for both):

    stream     [ shared 0..s-1 | chosen s..n_c-1 | rejected s..n_r-1 ]
    segments   [ shared + chosen: causal ]  [ rejected: causal, plus the whole shared range as prefix ]
    positions  0..n_c-1 for shared + chosen, s..n_r-1 for rejected

Every sequence's log-prob sum is its branch tokens plus the shared tokens (`shared_ids` names the rejected
side for them), so values and gradients equal the unshared layout's exactly (up to float summation order)
while the shared tokens' layers, LM head and backward run once. It needs the `cipo_varlen` attention
(prefix ranges); `flash_attention_2` does not read them, so the trainers pack without sharing there.

Groups (a preference pair, or a single sequence) are never split: both sides of a pair land in the same
micro-batch, so a pair's loss is computed where both of its log-probs are. Groups are assigned to bins by
first-fit-decreasing on their token count, which wastes little of the budget when lengths vary 4x, as
CoTs do. A group longer than the budget gets a bin of its own (the budget is a target, not a hard cap).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sequence:
    """One tokenized sequence: prompt then completion; the loss covers the completion."""

    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.completion_ids)

    @property
    def ids(self) -> tuple[int, ...]:
        return self.prompt_ids + self.completion_ids


@dataclass
class MicroBatch:
    input_ids: torch.Tensor
    position_ids: torch.Tensor
    targets: torch.Tensor
    loss_mask: torch.Tensor
    seq_ids: torch.Tensor
    cu_seqlens: torch.Tensor
    pairs: torch.Tensor  # [P, 2]; empty for single-sequence data
    groups: list[int]  # indices (into the caller's group list) of the groups in this micro-batch
    lengths: torch.Tensor  # [S] completion tokens per sequence (the loss denominators)
    # per segment (start, end) of a prefix range; host ints (read by every attention layer without a device
    # sync); None: no segment has a prefix (no sharing)
    prefixes: tuple[tuple[int, int], ...] | None = None
    shared_ids: torch.Tensor | None = None  # [T] long; None: no position is shared
    seq_tokens: int = 0  # tokens of the sequences, counting shared tokens once per sequence
    # per group, in order: its sequences' index range [first, end) (a loss that is a sum over groups)
    group_seqs: tuple[tuple[int, int], ...] = ()

    @property
    def num_seqs(self) -> int:
        return self.lengths.numel()

    @property
    def num_tokens(self) -> int:
        """Positions in the stream (what the model computes)."""
        return self.input_ids.numel()

    @property
    def max_seqlen(self) -> int:
        return int((self.cu_seqlens[1:] - self.cu_seqlens[:-1]).max()) if self.num_seqs else 0

    def to(self, device: torch.device | str) -> MicroBatch:
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return MicroBatch(**moved)


def first_fit_decreasing(sizes: list[int], budget: int) -> list[list[int]]:
    """Bins of item indices whose sizes sum to <= budget (an item larger than budget gets its own bin).

    Items are placed largest first into the first bin with room; bins keep item order by size, ties
    broken by index, so the result is deterministic.
    """
    if budget < 1:
        raise ValueError(f"token budget: expected a positive number of tokens, got {budget}")
    order = sorted(range(len(sizes)), key=lambda i: (-sizes[i], i))
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        for b, free in enumerate(room):
            if sizes[i] <= free:
                bins[b].append(i)
                room[b] -= sizes[i]
                break
        else:
            bins.append([i])
            room.append(budget - sizes[i])
    return bins


def shared_prefix(chosen: Sequence, rejected: Sequence) -> int:
    """Positions a pair can store once: the common token prefix minus one (see the module docstring),
    limited to the prompt when the two prompts differ in length, so the loss masks agree there."""
    a, b = chosen.ids, rejected.ids
    c = 0
    for x, y in zip(a, b):
        if x != y:
            break
        c += 1
    s = max(0, c - 1)
    if len(chosen.prompt_ids) != len(rejected.prompt_ids):
        s = min(s, max(0, min(len(chosen.prompt_ids), len(rejected.prompt_ids)) - 1))
    return s


def group_size(group: tuple[Sequence, ...], share_prefix: bool = False) -> int:
    """Stream positions a group takes in a micro-batch."""
    size = sum(len(s) for s in group)
    return size - shared_prefix(*group) if share_prefix and len(group) == 2 else size


def collate(groups: list[tuple[Sequence, ...]], members: list[int], share_prefix: bool = False) -> MicroBatch:
    """Concatenate the sequences of `groups[i] for i in members` into one flat micro-batch.

    A group of two sequences is a (chosen, rejected) pair; a group of one is a single sequence. With
    `share_prefix`, a pair's common prefix is stored once (module docstring).
    """
    ids, pos, tgt, msk, sid, shr, lengths = [], [], [], [], [], [], []
    cu, prefixes = [0], []
    pairs, group_seqs = [], []

    def put(seq: Sequence, seq_id: int, start: int, prefix: tuple[int, int]) -> None:
        """Stream positions `start..n-1` of `seq`; positions before `start` live in `prefix`."""
        n, p = len(seq), len(seq.prompt_ids)
        full = seq.ids
        ids.extend(full[start:])
        pos.extend(range(start, n))
        # position t predicts token t+1; the last position of a sequence predicts nothing
        tgt.extend((*full[start + 1 :], 0))
        # targets at positions p-1 .. n-2 are completion tokens (p >= 1 is checked at tokenization)
        first_scored = max(p - 1, start)
        msk.extend([False] * (first_scored - start) + [True] * (n - 1 - first_scored) + [False])
        sid.extend([seq_id] * (n - start))
        shr.extend([-1] * (n - start))
        cu.append(cu[-1] + n - start)
        prefixes.append(prefix)

    for g in members:
        group = groups[g]
        first = len(lengths)
        group_seqs.append((first, first + len(group)))
        lengths.extend(len(seq) - len(seq.prompt_ids) for seq in group)
        s = shared_prefix(*group) if share_prefix and len(group) == 2 else 0
        if s:
            start = cu[-1]
            put(group[0], first, 0, (0, 0))
            shr[start : start + s] = [first + 1] * s  # the shared positions count for the rejected side too
            put(group[1], first + 1, s, (start, start + s))
        else:
            for k, seq in enumerate(group):
                put(seq, first + k, 0, (0, 0))
        if len(group) == 2:
            pairs.append((first, first + 1))
    num_seqs = len(lengths)
    shared = any(b > a for a, b in prefixes)
    return MicroBatch(
        input_ids=torch.tensor(ids, dtype=torch.long),
        position_ids=torch.tensor(pos, dtype=torch.long),
        targets=torch.tensor(tgt, dtype=torch.long),
        loss_mask=torch.tensor(msk, dtype=torch.bool),
        seq_ids=torch.tensor(sid, dtype=torch.long),
        cu_seqlens=torch.tensor(cu, dtype=torch.int32),
        pairs=torch.tensor(pairs, dtype=torch.long).reshape(-1, 2),
        groups=list(members),
        lengths=torch.tensor(lengths, dtype=torch.long),
        prefixes=tuple(prefixes) if shared else None,
        shared_ids=torch.tensor([num_seqs if x < 0 else x for x in shr], dtype=torch.long)
        if shared
        else None,
        seq_tokens=sum(len(seq) for g in members for seq in groups[g]),
        group_seqs=tuple(group_seqs),
    )


def pack(
    groups: list[tuple[Sequence, ...]], token_budget: int, share_prefix: bool = False
) -> list[MicroBatch]:
    """Pack groups (pairs or single sequences) into micro-batches of about `token_budget` stream positions."""
    sizes = [group_size(g, share_prefix) for g in groups]
    return [collate(groups, sorted(b), share_prefix) for b in first_fit_decreasing(sizes, token_budget)]
