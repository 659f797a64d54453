"""Packing tokenized sequences into flat, padding-free micro-batches under a token budget.

A micro-batch is one token stream holding several sequences back to back (DESIGN.md §3):

    input_ids    [T]    the concatenated sequences
    position_ids [T]    restarting at 0 for every sequence
    targets      [T]    input_ids shifted left inside each sequence (the token each position predicts)
    loss_mask    [T]    True where the target is a completion token (EOS included)
    seq_ids      [T]    which of the micro-batch's sequences a position belongs to
    cu_seqlens   [S+1]  sequence boundaries (int32), for varlen attention
    pairs        [P, 2] (chosen, rejected) sequence indices, for preference data

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

    @property
    def num_seqs(self) -> int:
        return self.cu_seqlens.numel() - 1

    @property
    def num_tokens(self) -> int:
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


def collate(groups: list[tuple[Sequence, ...]], members: list[int]) -> MicroBatch:
    """Concatenate the sequences of `groups[i] for i in members` into one flat micro-batch.

    A group of two sequences is a (chosen, rejected) pair; a group of one is a single sequence.
    """
    ids, pos, tgt, msk, sid, lengths = [], [], [], [], [], []
    cu = [0]
    pairs = []
    for g in members:
        group = groups[g]
        first = len(lengths)
        for seq in group:
            s = len(lengths)
            n, p = len(seq), len(seq.prompt_ids)
            full = seq.ids
            ids.extend(full)
            pos.extend(range(n))
            # position t predicts token t+1; the last position of a sequence predicts nothing
            tgt.extend((*full[1:], 0))
            # targets at positions p-1 .. n-2 are completion tokens (p >= 1 is checked at tokenization)
            msk.extend([False] * (p - 1) + [True] * (n - p) + [False])
            sid.extend([s] * n)
            lengths.append(n - p)
            cu.append(cu[-1] + n)
        if len(group) == 2:
            pairs.append((first, first + 1))
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
    )


def pack(groups: list[tuple[Sequence, ...]], token_budget: int) -> list[MicroBatch]:
    """Pack groups (pairs or single sequences) into micro-batches of about `token_budget` tokens."""
    sizes = [sum(len(s) for s in g) for g in groups]
    return [collate(groups, sorted(b)) for b in first_fit_decreasing(sizes, token_budget)]
