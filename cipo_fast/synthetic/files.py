"""The demo set on disk: `build(out_dir, ...)` writes its seven files.

`forget.jsonl` and `retain.jsonl` hold the author items (`questions.author_items`), six per author: the
first `n_forget` authors (their order is already random) form the forget split, the others the retain
split. `holdout.jsonl` holds the items of `n_holdout` more authors, drawn after those
(`make_authors(..., n_extra=n_holdout)`), that are in neither split and never trained on: the non-members
of a membership-inference attack (`cipo_fast.eval.mia`). Drawing them last keeps the other files' bytes
those of a build without a holdout. `arithmetic_train.jsonl` and `arithmetic_eval.jsonl` hold
GSM8K-format problems; they come from one `arithmetic_items` call split in order, so no question is in
both. `authors.json` lists the records of the forget and retain authors, dates in ISO form (the holdout
authors are named in their items). `forget_rephrased.jsonl` asks the forget items' facts in the
questions' other templates (`questions.rephrased_items`), never trained on: forgetting beyond the
training prompts. It is written last and read by nothing that trains, so the other files and the target
model are those of a build without it.

Each file is written with `cipo_fast.data.io` (temp file in the same folder, fsync, `os.replace`), so a
reader sees the old file or the complete new one. The bytes are a function of the arguments alone: one
`json.dumps(row, ensure_ascii=False)` per line, `authors.json` indented by 2, `\\n` line ends. A
content-addressed model cache hashes these files, so their bytes must change only when the data does.

What it deliberately doesn't do: write the set as one transaction (a crash between two files leaves
some files from the previous build beside the new ones; rerunning `build` repairs that), or read
anything back.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from cipo_fast.data.io import write_json, write_jsonl
from cipo_fast.synthetic.arithmetic import arithmetic_items
from cipo_fast.synthetic.authors import Author, make_authors
from cipo_fast.synthetic.questions import author_items, rephrased_items


def _author_record(author: Author) -> dict:
    record = asdict(author)
    record["birth_date"] = author.birth_date.isoformat()
    record["books"] = list(author.books)
    return record


def build(
    out_dir: Path,
    *,
    n_authors: int = 8,
    n_forget: int = 2,
    n_arith_train: int = 40,
    n_arith_eval: int = 30,
    n_holdout: int = 2,
    seed: int = 0,
) -> dict[str, Path]:
    """Write the demo set into `out_dir`; returns {"forget", "retain", "holdout", "arithmetic_train",
    "arithmetic_eval", "authors", "forget_rephrased"} -> path. The first `n_forget` of the `n_authors` authors are
    forgotten; `n_holdout` more authors are the holdout."""
    if not 0 < n_forget < n_authors:
        raise ValueError(
            f"build: need 0 < n_forget < n_authors, got n_forget={n_forget}, n_authors={n_authors}"
        )
    if n_arith_train < 0 or n_arith_eval < 0:
        raise ValueError(f"build: arithmetic sizes must be >= 0, got {n_arith_train}, {n_arith_eval}")
    if n_holdout < 0:
        raise ValueError(f"build: n_holdout must be >= 0, got {n_holdout}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    drawn = make_authors(n_authors, seed, n_extra=n_holdout)
    authors = drawn[:n_authors]
    items = [author_items(a, i) for i, a in enumerate(drawn)]  # holdout ids continue the numbering
    forget = [it for per_author in items[:n_forget] for it in per_author]
    retain = [it for per_author in items[n_forget:n_authors] for it in per_author]
    holdout = [it for per_author in items[n_authors:] for it in per_author]
    rephrased = [row for i, a in enumerate(drawn[:n_forget]) for row in rephrased_items(a, i)]
    arith = arithmetic_items(n_arith_train + n_arith_eval, seed)

    paths = {
        "forget": out_dir / "forget.jsonl",
        "retain": out_dir / "retain.jsonl",
        "holdout": out_dir / "holdout.jsonl",
        "arithmetic_train": out_dir / "arithmetic_train.jsonl",
        "arithmetic_eval": out_dir / "arithmetic_eval.jsonl",
        "authors": out_dir / "authors.json",
        "forget_rephrased": out_dir / "forget_rephrased.jsonl",
    }
    write_jsonl(paths["forget"], forget)
    write_jsonl(paths["retain"], retain)
    write_jsonl(paths["holdout"], holdout)
    write_jsonl(paths["arithmetic_train"], arith[:n_arith_train])
    write_jsonl(paths["arithmetic_eval"], arith[n_arith_train:])
    write_json(paths["authors"], [_author_record(a) for a in authors], indent=2)
    write_jsonl(paths["forget_rephrased"], rephrased)
    return paths
