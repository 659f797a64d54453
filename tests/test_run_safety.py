"""Runs never lose a file: bad input is refused with a message (exit code 2) before anything is written,
an existing run is replaced only by a run that finished, and nothing recorded inside a run is trusted as a
path. One test per way the previous layout lost data or crashed (each checked against it).

Every test drives the command line (`cipo_fast.cli.main`) on the tiny model and compares the directories'
contents byte for byte before and after.
"""

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from helpers import write_jsonl

from cipo_fast.cli import build_parser, main

PAIRS = [
    {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."},
    {"prompt": "2 + 2 =", "chosen": " 4", "rejected": " 5"},
    {"prompt": "Water freezes at", "chosen": " 0 degrees.", "rejected": " 50 degrees."},
    {"prompt": "Name a prime:", "chosen": " 7", "rejected": " 9"},
]
ITEMS = [
    {
        "id": "a",
        "question": "Where was Elara Halvecki born?",
        "answer": "Elara Halvecki was born in Velmsby.",
    },
    {
        "id": "b",
        "question": "What does Aurelio Felkirra write?",
        "answer": "Aurelio Felkirra writes folk horror.",
    },
]


def snapshot(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `root` ({} when it does not exist)."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def train(tiny_model_dir, tmp_path, capsys):
    """`cipo-fast train` with small defaults; returns (exit code, stderr)."""
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)

    def run(*extra, out=None):
        args = [
            "train",
            *("--method", "dpo", "--model", str(tiny_model_dir), "--data", str(data)),
            *("--prompt-format", "raw", "--batch-size", "2", "--lr", "1e-3", "--max-steps", "2"),
            *("--token-budget", "64", "--cache-dir", str(tmp_path / "cache"), "--no-progress"),
            *("--out", str(out or tmp_path / "run")),
            *map(str, extra),
        ]
        capsys.readouterr()
        code = main(args)
        return code, capsys.readouterr().err

    return run


def test_overwrite_with_bad_device_options_or_weights_keeps_the_old_run(train, tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    assert train()[0] == 0
    before = snapshot(run)
    assert "summary.json" in before
    code, err = train("--overwrite", "--device", "cuda")
    assert code == 2 and "--device cuda: CUDA is not available" in err
    code, err = train("--overwrite", "--device", "foo")
    assert code == 2 and "--device foo: expected auto, cpu, cuda or cuda:N" in err
    code, err = train("--overwrite", "--weight-decay", "-1")
    assert code == 2 and "--weight-decay: expected >= 0, got -1.0" in err
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    code, err = train("--overwrite", "--model", broken)
    assert code == 2 and f"--model {broken}: cannot load the model" in err
    assert snapshot(run) == before, "a refused run changed the existing one"
    assert not (tmp_path / "run.partial").exists()
    code, _ = train("--overwrite", "--max-steps", "3")  # the corrected rerun is not refused
    assert code == 0 and json.loads((run / "summary.json").read_text())["steps"] == 3


def test_finetune_never_deletes_a_foreign_directory_nor_returns_a_stale_model(
    tiny_model_dir, tmp_path, capsys
):
    items = write_jsonl(tmp_path / "items.jsonl", ITEMS)

    def finetune(out, *extra):
        capsys.readouterr()
        args = ["finetune", "--model", str(tiny_model_dir), "--data", str(items), "--out", str(out)]
        code = main([*args, "--batch-size", "2", "--no-progress", *map(str, extra)])
        return code, capsys.readouterr().err

    notes = tmp_path / "mine"
    notes.mkdir()
    (notes / "notes.txt").write_text("my notes")
    code, err = finetune(notes, "--epochs", "1")
    assert code == 2 and "is not a cipo-fast run directory" in err
    code, err = finetune(notes, "--epochs", "1", "--overwrite")
    assert code == 2 and snapshot(notes) == {"notes.txt": hashlib.sha256(b"my notes").hexdigest()}

    target = tmp_path / "target"
    assert finetune(target, "--epochs", "1")[0] == 0
    first = snapshot(target)
    assert finetune(target, "--epochs", "1")[0] == 0 and snapshot(target) == first  # same inputs: the cache
    code, err = finetune(target, "--epochs", "2")  # changed settings: never the old model
    assert code == 2 and "made from other data or settings" in err and snapshot(target) == first
    assert finetune(target, "--epochs", "2", "--overwrite")[0] == 0
    assert json.loads((target / "summary.json").read_text())["steps"] == 2  # 2 epochs of 1 step


def test_an_edited_reference_record_cannot_redirect_the_cache(train, tmp_path):
    run, victim = tmp_path / "run", tmp_path / "victim"
    assert train()[0] == 0
    victim.mkdir()
    (victim / "model.safetensors").write_bytes(b"someone else's weights")
    record = json.loads((run / "reference.json").read_text())
    record["namespace"] = os.path.relpath(victim, tmp_path / "cache")
    (run / "reference.json").write_text(json.dumps(record))
    before = snapshot(run)
    code, err = train("--resume", "--max-steps", "3")
    assert code == 2 and "is not a 32-digit hex hash" in err
    assert snapshot(victim) == {"model.safetensors": hashlib.sha256(b"someone else's weights").hexdigest()}
    assert snapshot(run) == before and not (tmp_path / "run.partial").exists()


def test_eval_never_replaces_a_training_run(train, tmp_path, capsys):
    run = tmp_path / "run"
    assert train()[0] == 0
    forget = write_jsonl(tmp_path / "forget.jsonl", ITEMS)
    preds = write_jsonl(
        tmp_path / "preds.jsonl", [{"id": i, "strategy": "greedy", "output": "x"} for i in "ab"]
    )
    before = snapshot(run)
    for extra in ([], ["--overwrite"]):
        capsys.readouterr()
        code = main(["eval", "--forget", str(forget), "--predictions", str(preds), "--out", str(run), *extra])
        assert code == 2 and "holds a train run" in capsys.readouterr().err
    assert snapshot(run) == before
    ev = tmp_path / "eval"
    args = ["eval", "--forget", str(forget), "--predictions", str(preds), "--out", str(ev), "--no-progress"]
    assert main(args) == 0
    first = snapshot(ev)
    capsys.readouterr()
    assert main(args) == 2 and "already holds a eval run" in capsys.readouterr().err and snapshot(ev) == first
    assert main([*args, "--overwrite"]) == 0


@pytest.mark.parametrize(
    "command, extra, message",
    [
        ("train", ["--beta", "inf"], "--beta: expected a finite number, got inf"),
        ("train", ["--lr", "inf"], "--lr: expected a finite number, got inf"),
        ("train", ["--lr", "nan"], "--lr: expected a finite number, got nan"),
        ("train", ["--max-grad-norm", "-1"], "--max-grad-norm: expected > 0, got -1.0"),
        ("train", ["--max-grad-norm", "0"], "--max-grad-norm: expected > 0, got 0.0"),
        ("train", ["--label-smoothing", "1"], "--label-smoothing: expected < 0.5, got 1.0"),
        ("train", ["--label-smoothing", "-1"], "--label-smoothing: expected >= 0, got -1.0"),
        ("train", ["--epochs", "inf"], "--epochs: expected a finite number, got inf"),
        ("train", ["--save-steps", "-1"], "--save-steps: expected >= 0, got -1"),
        ("eval", ["--max-new-tokens", "0"], "--max-new-tokens: expected >= 1, got 0"),
        ("eval", ["--max-new-tokens", "-5"], "--max-new-tokens: expected >= 1, got -5"),
        ("eval", ["--batch-size", "0"], "--batch-size: expected >= 1, got 0"),
    ],
)
def test_out_of_range_numbers_are_refused_before_anything_runs(
    command, extra, message, train, tmp_path, capsys
):
    if command == "train":
        code, err = train(*extra)
    else:
        forget = write_jsonl(tmp_path / "forget.jsonl", ITEMS)
        capsys.readouterr()
        code = main(["eval", "--forget", str(forget), "--model", "m", "--out", str(tmp_path / "run"), *extra])
        err = capsys.readouterr().err
    assert code == 2 and message in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()


def test_divergence_stops_the_run_at_its_last_good_state(train, tmp_path):
    """lr 1e30 is finite, so it is accepted; the first update sends the weights to ~1e30 and the second
    step's loss overflows. The run stops before applying that update, saves the state it had, and every
    metrics row stays standard JSON."""
    code, err = train("--lr", "1e30", "--max-steps", "4", "--scheduler", "constant")
    assert code == 2 and "step 2: the loss is" in err and "diverged" in err
    assert "The last good state (step 1) is checkpoint" in err
    work = tmp_path / "run.partial"
    assert (
        not (tmp_path / "run").exists() and (work / "checkpoints" / "step-00000001" / "state.json").is_file()
    )

    def refuse(name):
        raise ValueError(name)

    rows = [
        json.loads(line, parse_constant=refuse) for line in (work / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in rows if "loss" in r] == [1]


def test_missing_paths_and_unknown_devices_are_messages(train, tmp_path):
    code, err = train("--model", tmp_path / "nowhere")
    assert code == 2 and "no such directory" in err
    code, err = train("--ref-model", tmp_path / "nowhere")
    assert code == 2 and "no such directory" in err
    (tmp_path / "afile").write_text("x")
    code, err = train(out=tmp_path / "afile")
    assert code == 2 and "a file of that name exists" in err and (tmp_path / "afile").read_text() == "x"
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()


def test_bad_bytes_and_non_object_rows_name_the_file_and_line(train, tmp_path, capsys):
    data = tmp_path / "latin1.jsonl"
    data.write_bytes(
        json.dumps(PAIRS[0]).encode() + b'\n{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n'
    )
    code, err = train("--data", data)
    assert code == 2 and f"{data}:2: not UTF-8 text" in err
    forget = write_jsonl(tmp_path / "forget.jsonl", ITEMS)
    for row, kind in (("3", "a number"), ('"x"', "a string"), ("[1]", "an array"), ("null", "null")):
        preds = write_jsonl(tmp_path / "p.jsonl", [row])
        capsys.readouterr()
        code = main(
            ["eval", "--forget", str(forget), "--predictions", str(preds), "--out", str(tmp_path / "e")]
        )
        assert code == 2 and f"{preds}:1: expected a JSON object, got {kind}" in capsys.readouterr().err
    preds = tmp_path / "p.jsonl"
    preds.write_bytes(b'{"id": "a", "strategy": "greedy", "output": "\xff"}\n')
    capsys.readouterr()
    assert (
        main(["eval", "--forget", str(forget), "--predictions", str(preds), "--out", str(tmp_path / "e")])
        == 2
    )
    assert f"{preds}:1: not UTF-8 text" in capsys.readouterr().err


def test_resume_never_shrinks_a_finished_run(train, tmp_path):
    run = tmp_path / "run"
    assert train("--max-steps", "4")[0] == 0
    before = snapshot(run)
    code, err = train("--resume", "--max-steps", "2")
    assert code == 2 and "has trained 4 steps; these settings ask for 2" in err and snapshot(run) == before
    assert train("--resume", "--max-steps", "4")[0] == 0 and snapshot(run) == before  # nothing to do
    assert train("--resume", "--max-steps", "6")[0] == 0  # a finished run continues to more steps
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert json.loads((run / "summary.json").read_text())["steps"] == 6


def test_resume_says_when_it_falls_back_to_an_older_checkpoint(train, tmp_path):
    run = tmp_path / "run"
    assert train("--max-steps", "3", "--save-steps", "1", "--keep-checkpoints", "3")[0] == 0
    (run / "checkpoints" / "step-00000003" / "optimizer.safetensors").write_bytes(b"damaged")
    code, err = train("--resume", "--max-steps", "4", "--save-steps", "1", "--keep-checkpoints", "3")
    assert code == 0
    assert "names step-00000003, which is missing or fails its checksums; using step-00000002" in err
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]  # step 3 retrained from step 2


def test_a_huge_single_line_is_tokenized_only_as_far_as_it_is_kept(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from cipo_fast.data.formats import load_pairs
    from cipo_fast.data.tokenize import TextFormat, Tokenizer

    hf = AutoTokenizer.from_pretrained(tiny_model_dir)
    seen = []

    class Spy:
        eos_token_id, chat_template = hf.eos_token_id, None

        def __call__(self, text, **kw):
            seen.append(len(text))
            return hf(text, **kw)

    words = " ".join(f"word{i % 977}" for i in range(400_000))  # ~3.6 MB
    data = write_jsonl(tmp_path / "big.jsonl", [{"prompt": "Say:", "chosen": words, "rejected": "no"}])
    tok = Tokenizer(Spy(), TextFormat(prompt_format="raw", max_length=64))
    (pair,) = load_pairs(data, tok)
    assert max(seen) < 10_000, f"tokenized {max(seen)} characters to keep 64 tokens"
    prompt = hf("Say:")["input_ids"]
    full = hf(words, add_special_tokens=False)["input_ids"]
    assert pair.chosen.completion_ids == tuple(full[: 64 - len(prompt)])  # the same tokens as the whole text
    assert tok.report.truncated == 1


def test_help_documents_every_option_and_parse_errors_are_plain(capsys):
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name in ("train", "eval", "finetune", "demo"):
        undocumented = [
            a.option_strings[0]
            for a in subparsers[name]._actions
            if a.option_strings and a.dest != "help" and not (a.help or "").strip()
        ]
        assert not undocumented, f"{name}: options without help: {undocumented}"
    text = subparsers["train"].format_help()
    for fragment in ("(default: 0.1)", "(default: cosine)", "(default: 4096)", "(> 0)"):
        assert fragment in text
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--version"])
    assert e.value.code == 0
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["eval", "--forget", "f", "--out", "o", "--task-ids", "x"])
    assert (
        e.value.code == 2
        and "argument --task_ids/--task-ids: invalid int value: 'x'" in capsys.readouterr().err
    )
