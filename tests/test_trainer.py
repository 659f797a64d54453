"""The lean trainer: TRL parity, reference cache, crash safety, methods, bad input (packing: test_packing.py)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cipo_fast.config import TrainConfig
from cipo_fast.model.loading import ModelOptions, load_model
from cipo_fast.train import checkpoint
from cipo_fast.trainers.preference import main as train

PAIRS = [
    {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."},
    {"prompt": "2 + 2 =", "chosen": " 4", "rejected": " 5"},
    {"prompt": "The capital of France is", "chosen": " Paris, a city on the Seine.", "rejected": " London."},
    {
        "prompt": "Water freezes at",
        "chosen": " 0 degrees Celsius.",
        "rejected": " 50 degrees Celsius, or so.",
    },
    {
        "prompt": "Q: Who wrote Hamlet?\nA:",
        "chosen": " William Shakespeare wrote it around 1600.",
        "rejected": " I think it was Charles Dickens.",
    },
    {"prompt": "Name a prime number:", "chosen": " 7", "rejected": " 9, which is odd."},
]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def config(tmp_path, model_dir, **over) -> TrainConfig:
    if "data" not in over:
        over["data"] = str(write_jsonl(tmp_path / "pairs.jsonl", PAIRS))
    base = dict(
        method="dpo",
        model=str(model_dir),
        out=str(tmp_path / "run"),
        prompt_format="raw",
        batch_size=2,
        lr=1e-3,
        max_steps=4,
        token_budget=64,
        cache_dir=str(tmp_path / "cache"),
        progress=False,
        scheduler="linear",
    )
    base.update(over)
    return TrainConfig(**base)


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def trl_step1(model_dir, tmp_path, bf16: bool) -> dict:
    """TRL 1.16 DPOTrainer's first log row (step-0 weights) on `PAIRS` in one batch, lr 1e-4, on the CPU."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(
        output_dir=str(tmp_path / "trl"),
        use_cpu=True,
        bf16=bf16,
        max_steps=1,
        logging_steps=1,
        per_device_train_batch_size=len(PAIRS),
        learning_rate=1e-4,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=42,
    )
    trainer = DPOTrainer(
        model=str(model_dir),
        args=args,
        train_dataset=Dataset.from_list(PAIRS),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
    )
    trainer.train()
    return trainer.state.log_history[0]


def test_trl_parity_step0(tiny_model_dir, tmp_path):
    """Step-1 row (computed with step-0 weights): loss, logps/chosen, logps/rejected equal TRL 1.16's."""
    pytest.importorskip("trl")
    theirs = trl_step1(tiny_model_dir, tmp_path, bf16=False)
    train(config(tmp_path, tiny_model_dir, batch_size=len(PAIRS), max_steps=1, lr=1e-4))
    ours = rows(tmp_path / "run")[-1]
    for key in ("loss", "logps/chosen", "logps/rejected", "rewards/margins", "grad_norm"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-7), key


# ---- reference cache ----


def test_second_epoch_runs_no_reference_forward(tiny_model_dir, tmp_path):
    train(config(tmp_path, tiny_model_dir, ref_mode="lazy", epochs=2, max_steps=-1))
    r = [x for x in rows(tmp_path / "run") if "loss" in x]
    per_epoch = len(r) // 2
    assert len(r) == 6 and per_epoch == 3
    assert sum(x["ref_forward_tokens"] for x in r[:per_epoch]) > 0
    assert all(x["ref_forward_tokens"] == 0 for x in r[per_epoch:])


def test_reference_cache_corruption_is_detected_and_recomputed(tiny_model_dir, tmp_path):
    cfg = config(tmp_path, tiny_model_dir, max_steps=1)
    train(cfg)
    first = rows(tmp_path / "run")
    shards = list((tmp_path / "cache").rglob("*.safetensors"))
    assert len(shards) == 1
    data = bytearray(shards[0].read_bytes())
    data[-3] ^= 0xFF  # flip a byte in the values
    shards[0].write_bytes(bytes(data))

    with pytest.warns(UserWarning, match="failed verification"):
        train(config(tmp_path, tiny_model_dir, max_steps=1, out=str(tmp_path / "run2")))
    again = rows(tmp_path / "run2")
    assert (
        again[0]["phase"] == "reference" and again[0]["ref_forward_tokens"] == first[0]["ref_forward_tokens"]
    )
    assert list((tmp_path / "cache").rglob("*.corrupt"))
    assert again[1]["loss"] == pytest.approx(first[1]["loss"])  # recomputed values are the true ones

    train(config(tmp_path, tiny_model_dir, max_steps=1, out=str(tmp_path / "run3")))
    assert rows(tmp_path / "run3")[0].get("phase") != "reference"  # now all cached: no reference pass


# ---- crash safety ----


def final_weights(run: Path) -> dict:
    return load_file(str(run / "model" / "model.safetensors"))


def test_sigkill_then_resume_matches_uninterrupted(tiny_model_dir, tmp_path):
    steps = 10
    base = [
        "-m",
        "cipo_fast.cli",
        "train",
        "--method",
        "dpo",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(write_jsonl(tmp_path / "pairs.jsonl", PAIRS)),
        "--prompt-format",
        "raw",
        "--batch-size",
        "2",
        "--lr",
        "1e-3",
        "--max-steps",
        str(steps),
        "--token-budget",
        "64",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--save-steps",
        "1",
        "--no-progress",
        "--scheduler",
        "cosine",
        "--warmup-ratio",
        "0.2",
    ]
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    subprocess.run(
        [sys.executable, *base, "--out", str(tmp_path / "full")], check=True, env=env, capture_output=True
    )

    run = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, *base, "--out", str(run)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    latest = (
        tmp_path / "killed.partial" / "checkpoints" / "latest"
    )  # a run lives in OUT.partial until it ends
    deadline = time.time() + 300
    while time.time() < deadline:
        if latest.is_file() and latest.read_text().strip() >= "step-00000004":
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not run.exists(), "the run finished before it could be killed"
    subprocess.run(
        [sys.executable, *base, "--out", str(run), "--resume"], check=True, env=env, capture_output=True
    )

    a, b = final_weights(tmp_path / "full"), final_weights(run)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    steps_logged = [r["step"] for r in rows(run) if "loss" in r]
    assert steps_logged == list(range(1, steps + 1))  # no duplicated or missing rows after the resume


def test_crash_during_checkpoint_write_keeps_previous(tiny_model_dir, tmp_path, monkeypatch):
    model, _ = load_model(str(tiny_model_dir), ModelOptions())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(input_ids=torch.tensor([[1, 2, 3]])).logits.sum().backward()
    opt.step()
    root = tmp_path / "ckpt"
    first = checkpoint.save(root, 1, model, opt, {"epoch": 0})
    saved = {k: v.clone() for k, v in model.state_dict().items()}

    import cipo_fast.train.checkpoint as ck

    real = ck.save_file
    calls = {"n": 0}

    def dying_save(tensors, path, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # model written, then the process "dies" writing the optimizer
            Path(path).write_bytes(b"partial")
            raise KeyboardInterrupt("simulated crash")
        return real(tensors, path, *a, **k)

    monkeypatch.setattr(ck, "save_file", dying_save)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(root, 2, model, opt, {"epoch": 0})
    monkeypatch.setattr(ck, "save_file", real)

    assert checkpoint.find_latest(root) == first
    checkpoint.load(first, model, opt)
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k])
    # a damaged newest checkpoint is skipped even if `latest` points at it
    second = checkpoint.save(root, 3, model, opt, {"epoch": 0})
    (second / "optimizer.safetensors").write_bytes(b"garbage")
    assert checkpoint.find_latest(root) == first


# ---- single-sequence methods and outputs ----


def test_npo_graddiff_sft_run_and_move_the_right_way(tiny_model_dir, tmp_path):
    forget = write_jsonl(
        tmp_path / "forget.jsonl", [{"prompt": p["prompt"], "completion": p["chosen"]} for p in PAIRS]
    )
    retain = write_jsonl(
        tmp_path / "retain.jsonl", [{"prompt": p["prompt"], "completion": p["rejected"]} for p in PAIRS]
    )
    for method, direction in (("npo", -1), ("ga", -1), ("sft", 1), ("graddiff", -1)):
        run = tmp_path / method
        train(
            config(
                tmp_path,
                tiny_model_dir,
                method=method,
                data=str(forget),
                out=str(run),
                max_steps=6,
                batch_size=6,
                retain=str(retain) if method == "graddiff" else None,
            )
        )
        r = [x for x in rows(run) if "loss" in x]
        change = r[-1]["logps/policy"] - r[0]["logps/policy"]
        assert change * direction > 0, (method, change)
        if method == "graddiff":
            assert "loss/retain" in r[-1]


def test_final_model_loads_with_transformers(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    train(config(tmp_path, tiny_model_dir, max_steps=1))
    m = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    assert m.config.vocab_size == 49152
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["method"] == "dpo" and cfg["batch_size"] == 2


def test_lora_run_writes_adapter_and_merged(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    train(config(tmp_path, tiny_model_dir, lora_r=4, save_merged=True, max_steps=2, ref_mode="lazy"))
    run = tmp_path / "run"
    assert (run / "adapter" / "adapter_config.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(run / "model")
    assert not any("lora" in n for n, _ in merged.named_parameters())


# ---- bad input ----


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        (
            ['{"prompt": "a", "chosen": "b", "rejected": "c"}', '{"prompt": "a", "chosen": '],
            r"pairs.jsonl:2: malformed JSON",
        ),
        (['{"prompt": "a", "chosen": "b"}'], r"pairs.jsonl:1: field 'rejected' is missing"),
        (
            [
                '{"prompt": "a", "chosen": "b", "rejected": "c"}',
                '{"prompt": "", "chosen": "b", "rejected": "c"}',
            ],
            r"pairs.jsonl:2: field 'prompt' is empty",
        ),
        (['{"prompt": "a", "chosen": "  ", "rejected": "c"}'], r"pairs.jsonl:1: field 'chosen' is empty"),
        (
            ['{"prompt": "' + "word " * 80 + '", "chosen": "b", "rejected": "c"}'],
            r"pairs.jsonl:1: the prompt has \d+ tokens, not less than max_length=32",
        ),
        (["[1, 2]"], r"pairs.jsonl:1: expected a JSON object"),
    ],
)
def test_bad_data_names_file_line_field(tiny_model_dir, tmp_path, lines, match):
    data = write_jsonl(tmp_path / "pairs.jsonl", lines)
    with pytest.raises(ValueError, match=match):
        train(config(tmp_path, tiny_model_dir, data=str(data), max_length=32))
    assert not (tmp_path / "run").exists()


def test_unknown_method_and_existing_out(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match=r"--method: expected one of dpo, robust, .*got 'dop'"):
        config(tmp_path, tiny_model_dir, method="dop")
    run = tmp_path / "run"
    run.mkdir()
    (run / "precious.txt").write_text("keep me")
    with pytest.raises(ValueError, match=r"is not a cipo-fast run directory .*refusing to touch it"):
        train(config(tmp_path, tiny_model_dir))
    with pytest.raises(ValueError, match=r"is not a cipo-fast run directory .*refusing to touch it"):
        train(config(tmp_path, tiny_model_dir, overwrite=True))  # not even with --overwrite
    assert (run / "precious.txt").read_text() == "keep me" and sorted(os.listdir(run)) == ["precious.txt"]


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    from cipo_fast.cli import main

    code = main(
        [
            "train",
            "--method",
            "dpo",
            "--model",
            "x",
            "--data",
            str(tmp_path / "none.jsonl"),
            "--out",
            str(tmp_path / "o"),
            "--beta",
            "-1",
        ]
    )
    assert code == 2
    assert "--beta: expected > 0" in capsys.readouterr().err


def test_loss_on_cot_or_answer_trains_that_part_only(tiny_model_dir, tmp_path):
    """GA on the CoT only / the answer only: the trained tokens are exactly that part's tokens (tokenized on
    their own), the other part is context or absent, and a plain-string completion is refused."""
    from transformers import AutoTokenizer

    from cipo_fast.data.formats import load_singles
    from cipo_fast.data.tokenize import TextFormat, Tokenizer

    hf = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok = Tokenizer(hf, TextFormat(prompt_format="raw"))
    item = {"question": "Where was Elara born?", "cot": "She was born in Velmsby.", "answer": "In Velmsby."}
    data = write_jsonl(tmp_path / "items.jsonl", [item])
    ids = lambda text: hf(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    prompt = hf(item["question"])["input_ids"]
    whole = load_singles(data, tok)[0].seq
    answer = load_singles(data, tok, "answer")[0].seq
    cot = load_singles(data, tok, "cot")[0].seq
    think = f"<think>\n{item['cot']}\n</think>\n\n"
    assert whole.completion_ids == (*ids(think + item["answer"]), hf.eos_token_id)
    assert answer.prompt_ids == (*prompt, *ids(think)) and answer.completion_ids == (
        *ids(item["answer"]),
        hf.eos_token_id,
    )
    assert cot.prompt_ids == tuple(prompt) and cot.completion_ids == tuple(
        ids(think)
    )  # no EOS: the answer follows
    plain = write_jsonl(tmp_path / "plain.jsonl", [{"prompt": "Q?", "completion": "just text"}])
    with pytest.raises(ValueError, match=r"plain.jsonl:1: field 'completion'.*--loss-on cot needs"):
        load_singles(plain, tok, "cot")
    with pytest.raises(ValueError, match="--loss-on answer applies to single-sequence methods"):
        TrainConfig(method="dpo", model="m", data="d", out="o", loss_on="answer")
