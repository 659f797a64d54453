"""The lean trainer: packing exactness, TRL parity, reference cache, crash safety, bad input."""

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
from cipo_fast.data.packing import Sequence, collate, first_fit_decreasing, pack
from cipo_fast.model.forward import micro_batch_logps, score_sequences
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


# ---- packing ----


def test_first_fit_decreasing_respects_budget_and_keeps_everything():
    sizes = [5, 9, 3, 7, 2, 8, 1, 12]
    bins = first_fit_decreasing(sizes, 12)
    assert sorted(i for b in bins for i in b) == list(range(len(sizes)))
    assert all(sum(sizes[i] for i in b) <= 12 for b in bins)
    assert len(bins) == 4  # 12 | 9+3 | 8+2+1 | 7+5 — FFD's packing, optimal here (47 tokens / 12)


def test_oversized_group_gets_its_own_bin():
    assert first_fit_decreasing([30, 2, 3], 10) == [[0], [2, 1]]


def test_collate_masks_and_positions():
    """prompt [5, 6], completion [7, 8]: positions 0 1 2 3; position 1 predicts 7, position 2 predicts 8."""
    s = Sequence((5, 6), (7, 8))
    t = Sequence((9,), (10,))
    mb = collate([(s, t)], [0])
    assert mb.input_ids.tolist() == [5, 6, 7, 8, 9, 10]
    assert mb.position_ids.tolist() == [0, 1, 2, 3, 0, 1]
    assert mb.targets.tolist() == [6, 7, 8, 0, 10, 0]
    assert mb.loss_mask.tolist() == [False, True, True, False, True, False]
    assert mb.seq_ids.tolist() == [0, 0, 0, 0, 1, 1]
    assert mb.cu_seqlens.tolist() == [0, 4, 6]
    assert mb.pairs.tolist() == [[0, 1]]
    assert mb.lengths.tolist() == [2, 1]


def test_pairs_stay_together():
    seqs = [
        (Sequence((1,) * a, (2,) * b), Sequence((1,) * a, (3,) * c))
        for a, b, c in [(3, 4, 9), (2, 2, 2), (5, 1, 1), (4, 8, 3)]
    ]
    mbs = pack(seqs, 16)
    assert sorted(g for mb in mbs for g in mb.groups) == [0, 1, 2, 3]
    for mb in mbs:
        assert mb.pairs.shape == (len(mb.groups), 2)


def test_packed_equals_unpacked(tiny_model_dir):
    model, tok = load_model(str(tiny_model_dir), ModelOptions())
    model.eval()
    texts = [("Hello there", " general Kenobi."), ("One two", " three four five six"), ("A", " b c")]
    seqs = [
        Sequence(tuple(tok(p)["input_ids"]), (*tuple(tok(c, add_special_tokens=False)["input_ids"]), 2))
        for p, c in texts
    ]
    with torch.no_grad():
        packed = micro_batch_logps(model, collate([(s,) for s in seqs], [0, 1, 2]))
        alone = torch.cat([micro_batch_logps(model, collate([(s,)], [0])) for s in seqs])
        # and against the model's own full-logits forward, one sequence at a time
        ref = []
        for s in seqs:
            ids = torch.tensor(s.ids)[None]
            lp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
            ref.append(lp.gather(1, ids[0, 1:, None])[len(s.prompt_ids) - 1 :].sum())
    torch.testing.assert_close(packed, alone, rtol=0, atol=1e-5)
    torch.testing.assert_close(packed, torch.stack(ref), rtol=0, atol=1e-5)


def test_collate_with_shared_prefix_layout():
    """prompt [5, 6], chosen [7, 8, 9], rejected [7, 3]: common prefix 3 tokens -> 2 stored once."""
    c, r = Sequence((5, 6), (7, 8, 9)), Sequence((5, 6), (7, 3))
    mb = collate([(c, r)], [0], share_prefix=True)
    assert mb.input_ids.tolist() == [5, 6, 7, 8, 9, 7, 3]
    assert mb.position_ids.tolist() == [0, 1, 2, 3, 4, 2, 3]
    assert mb.targets.tolist() == [6, 7, 8, 9, 0, 3, 0]
    assert mb.loss_mask.tolist() == [False, True, True, True, False, True, False]
    assert mb.seq_ids.tolist() == [0, 0, 0, 0, 0, 1, 1]
    assert mb.shared_ids.tolist() == [1, 1, 2, 2, 2, 2, 2]  # 2 = no second sequence
    assert mb.cu_seqlens.tolist() == [0, 5, 7]
    assert mb.prefixes == ((0, 0), (0, 2))
    assert mb.lengths.tolist() == [3, 2] and mb.seq_tokens == 9 and mb.num_tokens == 7
    # different prompt lengths: sharing stops before the shorter prompt's last token (masks must agree)
    c2, r2 = Sequence((5, 6, 7), (8,)), Sequence((5, 6), (7, 9))
    assert collate([(c2, r2)], [0], share_prefix=True).prefixes == ((0, 0), (0, 1))
    # nothing in common: the unshared layout
    plain = collate([(Sequence((1,), (2,)), Sequence((3,), (4,)))], [0], share_prefix=True)
    assert plain.prefixes is None and plain.shared_ids is None


def _shared_prefix_groups(tok, rng):
    """Pairs whose sides share a prompt and a random part of the completion, plus a single sequence."""

    def ids(text):
        return tuple(tok(text, add_special_tokens=False)["input_ids"])

    words = ["the", "author", "was", "born", "in", "a", "small", "town", "and", "wrote", "many", "novels"]
    groups = []
    for k in range(4):
        prompt = ids(f"Question {k}: where was the author born?")
        common = ids(" ".join(rng.choice(words) for _ in range(rng.randint(0, 12))))
        a = (*ids(" " + " ".join(rng.choice(words) for _ in range(rng.randint(1, 9)))), 2)
        b = (*ids(" so I do not know " + " ".join(rng.choice(words) for _ in range(rng.randint(0, 5)))), 2)
        groups.append((Sequence(prompt, common + a), Sequence(prompt, common + b)))
    groups.append((Sequence(ids("A single"), (*ids(" sequence here"), 2)),))
    return groups


@pytest.mark.parametrize("seed", [0, 1])
def test_shared_prefix_equals_unshared_values_and_gradients(tiny_model_dir, seed):
    """Prefix-shared packing gives the unshared layout's log-prob sums and parameter gradients."""
    import random

    model, tok = load_model(str(tiny_model_dir), ModelOptions())
    groups = _shared_prefix_groups(tok, random.Random(seed))
    members = list(range(len(groups)))

    def run(share):
        model.zero_grad(set_to_none=True)
        mb = collate(groups, members, share_prefix=share)
        logps = micro_batch_logps(model, mb)
        c, r = mb.pairs[:, 0], mb.pairs[:, 1]
        # a DPO-like combination that weighs each side differently, so a wrong attribution shows up
        (torch.nn.functional.logsigmoid(0.3 * (logps[c] - logps[r])).sum() + 0.1 * logps.sum()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return logps.detach(), grads, mb.num_tokens

    shared, g_shared, n_shared = run(True)
    plain, g_plain, n_plain = run(False)
    assert n_shared < n_plain  # the common prefixes were stored once
    torch.testing.assert_close(shared, plain, rtol=1e-6, atol=1e-5)  # fp32 summation order
    assert g_shared.keys() == g_plain.keys()
    for name in g_plain:
        torch.testing.assert_close(g_shared[name], g_plain[name], rtol=1e-4, atol=1e-6, msg=name)


def test_score_sequences_shares_neighbours_prefixes(tiny_model_dir):
    import random

    model, tok = load_model(str(tiny_model_dir), ModelOptions())
    seqs = [s for g in _shared_prefix_groups(tok, random.Random(2)) for s in g]
    seqs = seqs[1:] + seqs[:1]  # odd alignment: neighbours from different pairs, then real pairs
    shared = score_sequences(model, seqs, token_budget=64)
    plain = score_sequences(model, seqs, token_budget=64, share_prefix=False)
    torch.testing.assert_close(shared, plain, rtol=1e-6, atol=1e-5)


def test_shared_prefix_refused_by_attention_that_ignores_it(tiny_model_dir):
    import random

    model, tok = load_model(str(tiny_model_dir), ModelOptions())
    model.config._attn_implementation = "sdpa"
    mb = collate(_shared_prefix_groups(tok, random.Random(0)), [0, 1], share_prefix=True)
    with pytest.raises(ValueError, match="prefix-shared micro-batch needs the cipo_varlen attention"):
        micro_batch_logps(model, mb)


# ---- TRL parity ----


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_long_prefix_sharing_segment_runs_causal_and_equals_the_mask(monkeypatch, dtype):
    """`cipo_varlen` on a stream [prefix 5 | chosen 12 | rejected 11 sharing the prefix | single 6]: the
    padded causal form of the rejected segment (forced on by a zero `PADDED_MIN_TOKENS`) gives the masked
    form's outputs and q/k/v gradients, and runs without a mask (the flash path)."""
    from cipo_fast.model import attention

    torch.manual_seed(0)
    h, hkv, d, t = 4, 2, 8, 34
    base = [torch.randn(1, n, t, d, dtype=dtype) for n in (h, hkv, hkv)]
    cu = torch.tensor([0, 17, 28, 34])
    prefixes = [(0, 0), (0, 5), (0, 0)]  # segment 1 (tokens 17..28) sees tokens 0..5 as its prefix
    module = torch.nn.Module()
    masks = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        masks.append(attn_mask is None and kw.get("is_causal", False))
        return real(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", spy)

    def run(min_tokens):
        monkeypatch.setattr(attention, "PADDED_MIN_TOKENS", min_tokens)
        q, k, v = (x.clone().requires_grad_(True) for x in base)
        out, _ = attention._varlen_sdpa(module, q, k, v, None, cu_seq_lens_q=cu, cipo_prefixes=prefixes)
        (out.float() * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return out.detach(), [x.grad for x in (q, k, v)]

    masks.clear()
    masked, g_masked = run(10**9)
    assert masks == [True, False, True]  # segment 1 took the mask (math path)
    masks.clear()
    padded, g_padded = run(0)
    assert masks == [True, True, True]  # ... and here plain causal attention
    tol = dict(rtol=0, atol=1e-6) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(padded, masked, **tol)
    for a, b in zip(g_padded, g_masked):
        torch.testing.assert_close(a, b, **tol)


def test_short_segments_attend_in_fp32_under_cpu_bf16_autocast(monkeypatch):
    """Under CPU bf16 autocast a segment shorter than `BF16_MIN_TOKENS` runs SDPA in fp32 on its bf16
    inputs (equal to fp32 SDPA of them, fp32 out), a longer one in bf16 as autocast would."""
    from cipo_fast.model import attention

    torch.manual_seed(0)
    q, k, v = (torch.randn(1, n, 20, 8).bfloat16() for n in (4, 2, 2))
    cu = torch.tensor([0, 12, 20])
    module = torch.nn.Module()
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        seen.append(q.dtype)
        return real(q, k, v, **kw)

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", spy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = attention._varlen_sdpa(module, q, k, v, None, cu_seq_lens_q=cu)
    assert seen == [torch.float32, torch.float32] and out.dtype == torch.float32
    ref = torch.cat(
        [
            real(*(x[:, :, a:b].float() for x in (q, k, v)), is_causal=True, enable_gqa=True)
            for a, b in ((0, 12), (12, 20))
        ],
        dim=2,
    ).transpose(1, 2)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    seen.clear()
    monkeypatch.setattr(attention, "BF16_MIN_TOKENS", 10)  # segment 0 (12 tokens) is long now
    with torch.autocast("cpu", dtype=torch.bfloat16):
        attention._varlen_sdpa(module, q, k, v, None, cu_seq_lens_q=cu)
    assert seen == [torch.bfloat16, torch.float32]
