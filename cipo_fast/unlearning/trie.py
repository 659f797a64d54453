"""Which next tokens would complete a forbidden token sequence, given what a row has generated so far.

A forbidden sequence `s = (s_1, ..., s_n)` must never appear in a generation. Banning its last token at the
one step where the row's last `n - 1` tokens are `s_1 .. s_{n-1}` is enough, and bans nothing else:

    history  ... x  s_1 .. s_{n-1}     ->  s_n is banned (its logit set to -inf by the caller)
    n = 1                              ->  s_1 is banned at every step

The query asks which stored prefixes are *suffixes* of the history, so the trie is built over the
prefixes read backwards: sequence `s` is the path `s_{n-1}, s_{n-2}, ..., s_1` from the root, and the node
where that path ends lists `s_n` among the tokens it completes (single-token sequences sit at the root).
`banned(history)` walks back from the last generated token, collecting every node's completions, and stops
at the first token without a child or after the longest prefix: O(longest sequence) dictionary look-ups
per row and step, whatever the number of sequences.

A sequence stored `at_word_start` (a word tokenized without its leading space, "Kuwait" -> "Ku" "wait")
only counts where a word starts: at the start of the history, or after a token for which `opens_word`
holds (whitespace, an opening quote or bracket, as the caller decides). So "Al-Kuwaiti" may still be
written while "Kuwait" after a newline or a quote may not.

What it deliberately does not do: match text. A fact written with another tokenization than the stored
ones ("Par" + "is" where " Paris" was stored) is not a stored sequence; the callers store the usual forms
(with and without a leading space, case variants) and leave the rest to their other checks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence


class _Node:
    __slots__ = ("children", "completes", "completes_word")

    def __init__(self):
        self.children: dict[int, _Node] = {}
        self.completes: set[int] = set()  # last tokens of the sequences whose reversed prefix ends here
        self.completes_word: set[int] = set()  # ... of those stored `at_word_start`


class CompletionTrie:
    """Forbidden token sequences, queried for the tokens that would complete one (see the module
    docstring). Empty sequences are ignored."""

    def __init__(
        self,
        sequences: Iterable[Sequence[int]],
        at_word_start: Iterable[Sequence[int]] = (),
        opens_word: Callable[[int], bool] | None = None,
    ):
        self.root = _Node()
        self.sequences: set[tuple[int, ...]] = set()
        self.depth = 0  # longest stored prefix: how far back `banned` may need to look
        self.opens_word = opens_word or (lambda token: True)
        for anchored, seqs in ((False, sequences), (True, at_word_start)):
            for seq in seqs:
                seq = tuple(int(t) for t in seq)
                if not seq:
                    continue
                self.sequences.add(seq)
                node = self.root
                for tok in reversed(seq[:-1]):
                    node = node.children.setdefault(tok, _Node())
                (node.completes_word if anchored else node.completes).add(seq[-1])
                self.depth = max(self.depth, len(seq) - 1)

    def banned(self, history: Sequence[int]) -> set[int]:
        """The tokens that, appended to `history`, would end it with a stored sequence."""
        node, n = self.root, len(history)
        out = set(node.completes)
        for k in range(0, min(self.depth, n) + 1):
            if k:
                node = node.children.get(history[-k])
                if node is None:
                    break
                out |= node.completes
            if node.completes_word and (k == n or self.opens_word(history[-k - 1])):
                out |= node.completes_word  # the match starts a word
        return out

    def __len__(self) -> int:
        return len(self.sequences)


def contains_sequence(tokens: Sequence[int], sequence: Sequence[int]) -> bool:
    """Whether `sequence` occurs contiguously in `tokens` (the reference the trie's guarantee is checked
    against)."""
    n = len(sequence)
    seq = list(sequence)
    return n > 0 and any(list(tokens[i : i + n]) == seq for i in range(len(tokens) - n + 1))
