"""R-TOFU's baseline grid and TRU: the loss on closed forms, the data files, and training runs that move
the right way (KL retain term included)."""

import json

import pytest
import torch
from helpers import write_jsonl
from safetensors.torch import load_file
from test_trainer import config, rows, train

from cipo_fast.data.items import Item
from cipo_fast.train.losses import LossParams, PairLogps, get_loss, needs_reference
from cipo_fast.unlearning.baselines import IDK_ANSWERS, Refusal, baseline_rows

ITEMS = [
    Item(
        "a", "Where was Elara Voss born?", "Elara Voss was born in Velmsby.", "Elara is from Velmsby, a port."
    ),
    Item(
        "b", "What does Tomas Reyn write?", "Tomas Reyn writes sea novels.", "Reyn is known for sea novels."
    ),
    Item("c", "When did Ida Kell debut?", "Ida Kell debuted in 1999.", "Her first book came out in 1999."),
]
REFUSALS = {it.id: Refusal(f"I have no reliable record of {it.id}.", "I'm not sure.", "seed") for it in ITEMS}


def test_tru_loss_closed_form_and_no_reference():
    kind, fn = get_loss("tru")
    assert kind == "pairwise" and not needs_reference("tru")
    x = PairLogps(
        chosen=torch.tensor([-6.0, -2.0]),
        rejected=torch.tensor([-3.0, -8.0]),
        ref_chosen=None,
        ref_rejected=None,
        len_chosen=torch.tensor([3.0, 4.0]),
        len_rejected=torch.tensor([1.0, 2.0]),
    )
    per, rc, rr = fn(x, LossParams(tru_alpha=0.5))
    # -S_c/|c| + alpha * S_r/|r|:  2 + 0.5 * (-3) = 0.5;  0.5 + 0.5 * (-4) = -1.5
    torch.testing.assert_close(per, torch.tensor([0.5, -1.5]))
    torch.testing.assert_close(rc, torch.tensor([-2.0, -0.5]))
    torch.testing.assert_close(rr, torch.tensor([-3.0, -4.0]))


def test_grid_files_follow_rtofu_forms():
    files = baseline_rows(ITEMS, REFUSALS)
    assert set(files) == {
        "forget",
        "direct_idk",
        "answer_idk",
        "reasoned_idk",
        "direct_idk_pairs",
        "reasoned_idk_pairs",
        "tru_pairs",
    }
    for k, it in enumerate(ITEMS):
        gold = {"cot": it.cot, "answer": it.answer}
        assert files["forget"][k]["completion"] == gold
        direct = files["direct_idk"][k]["completion"]
        assert direct["cot"] == direct["answer"] == IDK_ANSWERS[k]  # IDK1: both parts one IDK line
        assert files["answer_idk"][k]["completion"] == {"cot": it.cot, "answer": IDK_ANSWERS[k]}  # IDK2
        assert files["reasoned_idk"][k]["completion"] == {
            "cot": REFUSALS[it.id].cot,
            "answer": IDK_ANSWERS[k],
        }
        assert files["tru_pairs"][k]["chosen"] == {"cot": REFUSALS[it.id].cot, "answer": "I'm not sure."}
        for name in ("direct_idk_pairs", "reasoned_idk_pairs", "tru_pairs"):
            assert files[name][k]["rejected"] == gold and files[name][k]["prompt"] == it.question
    with pytest.raises(ValueError, match="without a gold CoT"):
        baseline_rows([Item("x", "Q?", "A.")], {"x": REFUSALS["a"]})
    with pytest.raises(ValueError, match="no reasoned refusal for items c"):
        baseline_rows(ITEMS, {k: v for k, v in REFUSALS.items() if k != "c"})


def test_answer_idk_trains_only_the_idk_answer(tiny_model_dir, tmp_path):
    """IDK2 with --loss-on answer: the gold CoT is context (prompt side), the IDK answer the trained part."""
    from transformers import AutoTokenizer

    from cipo_fast.data.formats import load_singles
    from cipo_fast.data.tokenize import TextFormat, Tokenizer

    hf = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok = Tokenizer(hf, TextFormat(prompt_format="raw"))
    path = write_jsonl(tmp_path / "answer_idk.jsonl", baseline_rows(ITEMS, REFUSALS)["answer_idk"])
    seq = load_singles(path, tok, "answer")[0].seq
    assert seq.completion_ids == (*hf(IDK_ANSWERS[0], add_special_tokens=False)["input_ids"], hf.eos_token_id)
    assert hf.decode(seq.prompt_ids).endswith(f"<think>\n{ITEMS[0].cot}\n</think>\n\n")


def test_cli_writes_the_grid_with_seeds_and_template_fallback(tmp_path):
    from cipo_fast.cli import main

    forget = write_jsonl(
        tmp_path / "forget.jsonl",
        [{"id": it.id, "question": it.question, "answer": it.answer, "cot": it.cot} for it in ITEMS],
    )
    seeds = write_jsonl(
        tmp_path / "seeds.jsonl", [{"id": "b", "cot": "No record of Reyn.", "answer": "Unsure."}]
    )
    assert (
        main(["baseline-data", "--forget", str(forget), "--out", str(tmp_path / "g"), "--seeds", str(seeds)])
        == 0
    )
    refusals = {
        r["id"]: r for r in map(json.loads, (tmp_path / "g" / "refusals.jsonl").read_text().splitlines())
    }
    assert refusals["b"]["source"] == "seed" and refusals["b"]["cot"] == "No record of Reyn."
    assert refusals["a"]["source"] == refusals["c"]["source"] == "template"
    tru = [json.loads(x) for x in (tmp_path / "g" / "tru_pairs.jsonl").read_text().splitlines()]
    assert tru[1]["chosen"] == {"cot": "No record of Reyn.", "answer": "Unsure."}
    assert ITEMS[0].question in tru[0]["chosen"]["cot"]  # the template restates the question


def test_tru_run_raises_the_target_lowers_the_forget_trace_and_runs_no_reference(tiny_model_dir, tmp_path):
    pairs = [
        {"prompt": it.question, "chosen": f" {REFUSALS[it.id].cot}", "rejected": f" {it.answer}"}
        for it in ITEMS
    ]
    data = write_jsonl(tmp_path / "tru.jsonl", pairs)
    retain = write_jsonl(tmp_path / "retain.jsonl", [{"prompt": "The sky is", "completion": " blue."}])
    summary = train(
        config(
            tmp_path,
            tiny_model_dir,
            method="tru",
            data=str(data),
            retain=str(retain),
            max_steps=6,
            batch_size=3,
        )
    )
    r = [x for x in rows(tmp_path / "run") if "loss" in x]
    assert r[-1]["logps/chosen"] > r[0]["logps/chosen"] and r[-1]["logps/rejected"] < r[0]["logps/rejected"]
    assert "loss/retain" in r[-1]
    assert summary["reference_precompute_tokens"] == 0 and not (tmp_path / "cache").exists()


def test_kl_retain_term_is_zero_at_the_reference_then_grows(tiny_model_dir, tmp_path):
    """GA + KL: at step 1 the policy is the reference, so the KL term and its gradient vanish and the first
    update equals plain GA's; later steps report a positive KL."""
    forget = write_jsonl(
        tmp_path / "forget.jsonl", [{"prompt": it.question, "completion": f" {it.answer}"} for it in ITEMS]
    )
    retain = write_jsonl(
        tmp_path / "retain.jsonl", [{"prompt": "The capital of France is", "completion": " Paris."}]
    )
    common = dict(method="ga", data=str(forget), batch_size=3, scheduler="constant")
    train(config(tmp_path, tiny_model_dir, out=str(tmp_path / "ga"), max_steps=1, **common))
    train(
        config(
            tmp_path,
            tiny_model_dir,
            out=str(tmp_path / "kl1"),
            max_steps=1,
            retain=str(retain),
            retain_loss="kl",
            **common,
        )
    )
    a, b = (load_file(tmp_path / d / "model" / "model.safetensors") for d in ("ga", "kl1"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-7)
    train(
        config(
            tmp_path,
            tiny_model_dir,
            out=str(tmp_path / "kl"),
            max_steps=4,
            retain=str(retain),
            retain_loss="kl",
            **common,
        )
    )
    r = [x for x in rows(tmp_path / "kl") if "loss" in x]
    assert r[0]["loss/retain_kl"] == pytest.approx(0.0, abs=1e-6) and r[-1]["loss/retain_kl"] > 1e-4
    with pytest.raises(ValueError, match="--retain-loss kl needs a retain set"):
        config(tmp_path, tiny_model_dir, retain_loss="kl", **common)
