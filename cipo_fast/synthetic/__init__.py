"""The synthetic demo set: fictitious authors to memorize and forget, and small arithmetic problems.

The demo fine-tunes a tiny model (SmolLM2-135M on a 2-core CPU) on facts about invented authors, then
unlearns the authors of the forget split while keeping those of the retain split and its arithmetic; the
authors of the holdout split are never trained on (the non-members of membership inference). So
the data is built to be learned in minutes and checked exactly. One file per part:

    pools.py        the fixed name, city, genre, award, job and title pools (fictitious except countries)
    authors.py      `Author`, `make_authors(n, seed, n_extra)`: a seeded sampler that rejects any string
                    overlapping one already taken, so no two authors share a fact, even as read by
                    `cipo_fast.eval.leakage`, and draws extra authors after the first n without
                    changing them; `author_facts`, the spans to forget
    questions.py    `author_items`: per author one question / CoT / answer / reasoned "I don't know" for
                    each of the six fact families (`FAMILIES`), 2–3 templates per family;
                    `rephrased_items`: the same facts asked in the templates not picked
    arithmetic.py   `arithmetic_items`: two-step GSM8K-format problems with small operands, the steps
                    kept as data (`ArithStep`) so tests recompute them
    files.py        `build(out_dir, ...)`: forget / retain / holdout / arithmetic train / eval JSON lines,
                    `authors.json` and the forget items' unseen phrasings, each written atomically

Everything is deterministic in `seed` (one `random.Random` per call, no global random state): the same
arguments give byte-identical files.

What it deliberately doesn't do: pronouns (authors have no gender field), GSM8K's `<<a*b=c>>`
calculator annotations (noise for a tiny model), free paraphrases or multi-hop questions (one trained
question per fact family is the point of the demo; the other templates are the unseen phrasings).
"""

from cipo_fast.synthetic.arithmetic import ArithProblem, ArithStep, arithmetic_items, arithmetic_problems
from cipo_fast.synthetic.authors import Author, author_facts, make_authors
from cipo_fast.synthetic.files import build
from cipo_fast.synthetic.questions import FAMILIES, author_items, rephrased_items

__all__ = [
    "FAMILIES",
    "ArithProblem",
    "ArithStep",
    "Author",
    "arithmetic_items",
    "arithmetic_problems",
    "author_facts",
    "author_items",
    "build",
    "make_authors",
    "rephrased_items",
]
