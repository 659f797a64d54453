"""Splitting one optimizer step's samples over the ranks of a process group: pure functions of the step.

Every rank holds the whole step (the data order is a function of the seed and the step,
`cipo_fast.train.schedule`) and computes the same split, so no rank sends another its samples:

    groups    a step's groups (a preference pair, or one sequence) are the unit: a pair is never split
    balance   largest first, each group to the rank with the fewest tokens so far (ties: fewer groups,
              then the lower rank) -- Graham's LPT rule: the ranks' loads differ by at most one group's
              tokens. Retain sequences are balanced the same way, apart.
    passes    FSDP2 gathers every layer's weights in each forward and reduces its gradients in each
              backward, so every rank must run the same number of forward + backward passes. A rank's
              passes are its packed micro-batches (`cipo_fast.data.packing.first_fit_decreasing`, exactly
              what `pack` will make of its share); the ranks with fewer run zero-weight passes of the
              step's smallest group (`filler`) until they reach the most any rank needs.

What the split deliberately does not change: the loss denominators. A rank's micro-batch contributes
`sum(per-sample losses) / samples in the whole step`, and the ranks' gradients are summed, so the gradient
is the single-process one up to float summation order (`cipo_fast.train.step`).
"""

from __future__ import annotations

from dataclasses import dataclass

from cipo_fast.data.packing import first_fit_decreasing, group_size


def balance(sizes: list[int], parts: int) -> list[list[int]]:
    """Item indices in `parts` lists of about equal total size (module docstring), each list ascending."""
    assert parts >= 1, f"balance: {parts} parts"
    loads, out = [0] * parts, [[] for _ in range(parts)]
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        r = min(range(parts), key=lambda r: (loads[r], len(out[r]), r))
        out[r].append(i)
        loads[r] += sizes[i]
    return [sorted(p) for p in out]


@dataclass(frozen=True)
class RankShare:
    """One rank's part of an optimizer step."""

    groups: tuple[int, ...]  # indices into the step's groups that this rank trains on
    retain: tuple[int, ...]  # indices into the step's retain sequences
    passes: int  # forward + backward passes every rank runs: the most any rank's share packs into
    filler: tuple  # the step's smallest group, run at zero weight by a rank with fewer passes


def share_step(
    groups: list[tuple], retain_seqs: list, rank: int, world: int, token_budget: int, share_prefix: bool
) -> RankShare:
    """Rank `rank`'s share of a step of `groups` and `retain_seqs` over `world` ranks (module docstring);
    `share_prefix` must be what the step packs with, so the pass counts are the real ones."""
    assert groups, "a step has at least one group"
    sizes = [group_size(g, share_prefix) for g in groups]
    retain_sizes = [len(s) for s in retain_seqs]
    group_parts, retain_parts = balance(sizes, world), balance(retain_sizes, world)

    def passes(r: int) -> int:
        return len(first_fit_decreasing([sizes[i] for i in group_parts[r]], token_budget)) + len(
            first_fit_decreasing([retain_sizes[i] for i in retain_parts[r]], token_budget)
        )

    smallest = min(range(len(groups)), key=lambda i: (sizes[i], i))
    return RankShare(
        groups=tuple(group_parts[rank]),
        retain=tuple(retain_parts[rank]),
        passes=max(passes(r) for r in range(world)),
        filler=groups[smallest],
    )
