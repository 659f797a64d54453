"""R-TOFU's files -> the item files of one benchmark run (forget fold, holdout fold, retain, utility sets).

R-TOFU (Yoon et al. 2025, arXiv 2505.15214) ships TOFU's fictitious authors with reasoning traces:

    forget01.json        JSON lines {task_id, question, answer, cot}: 10 folds (task_id 1..10) of 40
                         questions, 20 about each of two authors
    retain10.json        JSON lines {question, answer, cot}: the retain authors
    idkcot.jsonl         one JSON string per forget01 row (same order): a reasoned refusal
    real_authors_perturbed_cot.json, world_facts_perturbed_cot.json
                         JSON lines {question, answer, ...}: general knowledge, model utility
    gsm8k/test_1000.jsonl  GSM8K {question, answer "... #### N"}: reasoning utility (beside R-TOFU's MU)

`build` writes, under `out`:

    forget.jsonl         the forget fold's rows, with ids `t<task>-<nn>` and the fold's reasoned refusals
                         as `idk_cot` (so `unlearning.baselines` seeds Reasoned-IDK from R-TOFU's own)
    holdout.jsonl        another fold, never trained on: the membership-inference holdout
    forget_rephrased.jsonl  with `rephrased` (a file of {question, paraphrased_question}, such as
                         forget01_perturbed_dev.json for folds 6-10): the forget rows it paraphrases, asked
                         in its words -- forgetting beyond the training prompts
    retain.jsonl, real_authors.jsonl, world_facts.jsonl   the first n rows of each
    arithmetic_train.jsonl / arithmetic_eval.jsonl        disjoint slices of GSM8K's test_1000 file

and returns {name: path} in the shape `synthetic.build` returns, plus `real_authors` and `world_facts`.
Every file is checked as it is read: a missing file, a row without a field, a fold with too few rows is a
ValueError naming the file (and line). The data stays where it is; only the selected rows are written.
"""

from __future__ import annotations

from pathlib import Path

from cipo_fast.data.formats import text_field
from cipo_fast.data.io import read_jsonl, write_jsonl

FILES = {
    "forget": "rtofu/forget01.json",
    "retain": "rtofu/retain10.json",
    "idk": "rtofu/idkcot.jsonl",
    "real_authors": "rtofu/real_authors_perturbed_cot.json",
    "world_facts": "rtofu/world_facts_perturbed_cot.json",
    "gsm8k": "gsm8k/test_1000.jsonl",
}
PARAPHRASES = "rtofu/forget01_perturbed_dev.json"  # folds 6-10 with paraphrased questions (optional)


def missing(root: str | Path) -> list[Path]:
    """The files `build` needs that `root` lacks."""
    return [Path(root) / rel for rel in FILES.values() if not (Path(root) / rel).is_file()]


def _rows(path: Path, fields: tuple[str, ...], objects: bool = True) -> list[dict]:
    rows = []
    for lineno, obj in read_jsonl(path, objects=objects):
        if objects:
            for key in fields:
                text_field(obj, key, f"{path}:{lineno}")
        rows.append(obj)
    return rows


def _take(rows: list, n: int | None, what: str, path: Path) -> list:
    if n is not None and n > len(rows):
        raise ValueError(f"{path}: {what} asks for {n} rows, the file has {len(rows)}")
    return rows if n is None else rows[:n]


def build(
    out: str | Path,
    root: str | Path,
    *,
    forget_task: int = 1,
    holdout_task: int = 2,
    n_forget: int | None = None,
    n_retain: int = 80,
    n_real_authors: int = 40,
    n_world_facts: int = 40,
    n_arith_train: int = 40,
    n_arith_eval: int = 30,
    rephrased: str | Path | None = None,
) -> dict[str, Path]:
    """Write the run's item files (see the module docstring); `n_forget` None = the whole fold.
    `rephrased`: a file of JSON lines {question, paraphrased_question} (R-TOFU's perturbed dev split, or a
    set in its format): the forget rows it paraphrases go to forget_rephrased.jsonl."""
    root, out = Path(root), Path(out)
    if forget_task == holdout_task:
        raise ValueError(f"forget fold {forget_task} is also the holdout fold; choose two different folds")
    if absent := missing(root):
        raise ValueError(f"R-TOFU data: {', '.join(map(str, absent))} not found (data root {root})")
    paths = {k: root / rel for k, rel in FILES.items()}
    forget_rows = _rows(paths["forget"], ("task_id", "question", "answer", "cot"))
    idk = _rows(paths["idk"], (), objects=False)
    for i, cot in enumerate(idk):
        if not (isinstance(cot, str) and cot.strip()):
            raise ValueError(f"{paths['idk']}: row {i + 1} is not a non-empty JSON string")

    def fold(task: int, n: int | None) -> list[dict]:
        rows = []
        for index, row in enumerate(forget_rows):
            if str(row["task_id"]).strip() == str(task):
                extra = {"idk_cot": idk[index]} if index < len(idk) else {}
                keep = {k: row[k] for k in ("task_id", "question", "answer", "cot")}
                rows.append({"id": f"t{task}-{len(rows):02d}", **keep, **extra})
        if not rows:
            raise ValueError(f"{paths['forget']}: no rows with task_id {task}")
        return _take(rows, n, f"fold {task}", paths["forget"])

    forget = fold(forget_task, n_forget)
    holdout = fold(holdout_task, len(forget))

    def numbered(key: str, n: int, fields: tuple[str, ...], prefix: str) -> list[dict]:
        rows = _take(_rows(paths[key], fields), n, key, paths[key])
        return [
            {"id": f"{prefix}-{i:03d}", **{k: row[k] for k in fields if k in row}}
            for i, row in enumerate(rows)
        ]

    gsm = _take(
        _rows(paths["gsm8k"], ("question", "answer")), n_arith_train + n_arith_eval, "GSM8K", paths["gsm8k"]
    )
    files = {
        "forget": forget,
        "holdout": holdout,
        "retain": numbered("retain", n_retain, ("question", "answer", "cot"), "retain"),
        "real_authors": numbered("real_authors", n_real_authors, ("question", "answer"), "real"),
        "world_facts": numbered("world_facts", n_world_facts, ("question", "answer"), "world"),
        "arithmetic_train": [{"id": f"gsm-{i:04d}", **r} for i, r in enumerate(gsm[:n_arith_train])],
        "arithmetic_eval": [
            {"id": f"gsm-{i:04d}", **r} for i, r in enumerate(gsm[n_arith_train:], start=n_arith_train)
        ],
    }
    if rephrased is not None:
        files["forget_rephrased"] = _rephrased(Path(rephrased), forget)
    out.mkdir(parents=True, exist_ok=True)
    result = {}
    for name, rows in files.items():
        result[name] = out / f"{name}.jsonl"
        write_jsonl(result[name], rows)
    return result


def _rephrased(path: Path, forget: list[dict]) -> list[dict]:
    """The forget rows asked in `path`'s paraphrased questions (matched on the question text): id
    `<id>-p1`, `phrasing_of` the row's id, the row's answer and CoT."""
    asked = {}
    for lineno, obj in read_jsonl(path):
        for key in ("question", "paraphrased_question"):
            text_field(obj, key, f"{path}:{lineno}")
        asked.setdefault(obj["question"].strip(), obj["paraphrased_question"])
    rows = [
        {**row, "id": f"{row['id']}-p1", "question": asked[row["question"].strip()], "phrasing_of": row["id"]}
        for row in forget
        if row["question"].strip() in asked
    ]
    if not rows:
        raise ValueError(
            f"{path}: paraphrases none of the {len(forget)} forget questions (matched on 'question')"
        )
    return rows
