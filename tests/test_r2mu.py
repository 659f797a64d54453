"""R²MU (`cipo_fast.unlearning.r2mu`, `trainers/r2mu.py`): the loss in closed form, which parameters a step
touches, the truncated forward against the model's own hidden states, the shared lower layers against two
full models, and `cipo-fast train --method r2mu` end to end with a resume.

The model is a 4-layer variant of the tiny random Llama (`helpers.make_tiny_llama`, SmolLM2's tokenizer), so
that with ℓ = 2 and the trained layers 1, 2 there is a shared frozen layer below (0) and one above (3).
"""

import copy
import json
from pathlib import Path

import pytest
import torch
from helpers import write_jsonl
from safetensors.torch import load_file

from cipo_fast.data.packing import Sequence, pack
from cipo_fast.model.loading import ModelOptions, load_model
from cipo_fast.unlearning import r2mu

LAYER, TRAIN_LAYERS, DOWN = 2, (1, 2), ("mlp.down_proj.weight",)


@pytest.fixture(scope="module")
def tiny4_dir(smol_dir, tmp_path_factory) -> Path:
    from helpers import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("tiny_llama4"), smol_dir, num_layers=4)


def _seqs(lengths, seed=0):
    """Sequences of random ids: a 3-token prompt, then `n` completion tokens."""
    g = torch.Generator().manual_seed(seed)
    return [
        Sequence(
            tuple(torch.randint(3, 1000, (3,), generator=g).tolist()),
            tuple(torch.randint(3, 1000, (n,), generator=g).tolist()),
        )
        for n in lengths
    ]


def _terms(seqs):
    """Forget (completion tokens) and unthink (trace tokens) steered, retain and CoT (all tokens) kept."""
    return [
        r2mu.Term("forget", r2mu.MISDIRECT, 1.0, ((seqs[0], 3), (seqs[1], 3))),
        r2mu.Term("unthink", r2mu.MISDIRECT, 0.5, ((seqs[2], 3),)),
        r2mu.Term("retain", r2mu.PRESERVE, 1.7, ((seqs[3], 0), (seqs[4], 0))),
        r2mu.Term("cot", r2mu.PRESERVE, 0.8, ((seqs[5], 0),)),
    ]


def test_loss_on_hand_made_activations_is_the_closed_form():
    """d = 2, c = 5, u = (0.6, 0.8), so c·u = (3, 4). Forget tokens h = (3, 4), (0, 0) and a padding token
    (weight 0): errors 0 and (3² + 4²) / 2 = 12.5, mean over the N_f = 2 real tokens 6.25. Retain tokens
    h = (1, 1), (2, 2) against h_0 = (1, 3), (2, 2): errors (0 + 4) / 2 = 2 and 0, mean 1, times α = 1.7.
    L = 6.25 + 1.7 = 7.95; it equals `F.mse_loss` over the real tokens only (the authors' formula without
    padding) and does not move when the padding token's activation does."""
    cu = torch.tensor([3.0, 4.0])
    h_f = torch.tensor([[3.0, 4.0], [0.0, 0.0], [100.0, -7.0]])
    w_f = torch.tensor([0.5, 0.5, 0.0])
    h_r, h_0 = torch.tensor([[1.0, 1.0], [2.0, 2.0]]), torch.tensor([[1.0, 3.0], [2.0, 2.0]])
    loss = r2mu.r2mu_loss(h_f, cu, w_f) + r2mu.r2mu_loss(h_r, h_0, torch.full((2,), 1.7 / 2))
    assert loss.item() == pytest.approx(7.95, abs=1e-6)
    mse = torch.nn.functional.mse_loss
    assert loss.item() == pytest.approx(
        (mse(h_f[:2], cu.expand(2, 2)) + 1.7 * mse(h_r, h_0)).item(), abs=1e-6
    )
    h_f[2] = torch.tensor([-3.0, 1e4])
    assert r2mu.r2mu_loss(h_f, cu, w_f).item() == pytest.approx(6.25, abs=1e-6)


def test_steering_vector_is_a_seeded_positive_direction_of_norm_c():
    v = r2mu.steering_vector(64, 6.5, seed=3)
    u = torch.rand(64, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(v, 6.5 * u / u.norm())
    assert v.norm().item() == pytest.approx(6.5, rel=1e-6) and bool((v > 0).all())
    assert torch.equal(v, r2mu.steering_vector(64, 6.5, seed=3))
    assert not torch.equal(v, r2mu.steering_vector(64, 6.5, seed=4))


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_truncated_forward_equals_the_models_hidden_states(tiny4_dir, layer):
    """Three sequences packed in one stream against a right-padded batch through the full model:
    `hidden_states[layer + 1]` (the output of layer `layer`) at every real position."""
    model, _ = load_model(str(tiny4_dir), ModelOptions())
    model.eval()
    seqs = _seqs([9, 2, 5], seed=layer)
    (mb,) = pack([(s,) for s in seqs], 1000)
    with torch.no_grad():
        got = r2mu.forward_to_layer(model, mb, layer)
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), 2)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for k, s in enumerate(seqs):
            ids[k, : len(s)], mask[k, : len(s)] = torch.tensor(s.ids), 1
        want = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[layer + 1]
    bounds = mb.cu_seqlens.tolist()
    for k, g in enumerate(mb.groups):
        n = len(seqs[g])
        torch.testing.assert_close(got[bounds[k] : bounds[k + 1]], want[g, :n], rtol=1e-5, atol=1e-5)
        assert bounds[k + 1] - bounds[k] == n


def test_truncated_forward_check_refuses_a_decoder_it_does_not_rebuild(tiny4_dir):
    """A decoder whose forward does more before its layers than embed (here: doubles the embeddings, as
    a Gemma-style scale outside the embedding module would) must fail the check, not train silently."""
    model, _ = load_model(str(tiny4_dir), ModelOptions())
    probes = [tuple(range(5, 12)), tuple(range(20, 24))]
    r2mu.check_truncated_forward(model, LAYER, probes)
    decoder, forward = model.model, model.model.forward

    def scaled(input_ids=None, inputs_embeds=None, **kw):
        return forward(inputs_embeds=2 * decoder.embed_tokens(input_ids), **kw)

    decoder.forward = scaled
    with pytest.raises(ValueError, match="truncated forward differs"):
        r2mu.check_truncated_forward(model, LAYER, probes)


def test_one_step_changes_only_the_chosen_matrices_and_runs_nothing_above_layer(tiny4_dir):
    model, _ = load_model(str(tiny4_dir), ModelOptions())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    st = r2mu.prepare(model, LAYER, TRAIN_LAYERS, DOWN)
    assert sorted(st.trainable) == [f"model.layers.{i}.mlp.down_proj.weight" for i in TRAIN_LAYERS]
    assert [n for n, p in model.named_parameters() if p.requires_grad] == sorted(st.trainable)
    ran = []
    above = [model.model.layers[3], model.model.norm, model.lm_head]
    hooks = [m.register_forward_hook(lambda mod, i, o: ran.append(type(mod).__name__)) for m in above]
    opt = torch.optim.AdamW(list(st.trainable.values()), lr=1e-2)
    values = r2mu.accumulate(st, _terms(_seqs([4, 6, 5, 7, 3, 8])), r2mu.steering_vector(64, 6.5, 0), 16)
    opt.step()
    for h in hooks:
        h.remove()
    assert not ran, f"modules above layer {LAYER} ran: {ran}"
    assert values["forget"] > 0 and values["unthink"] > 0
    for name, value in model.state_dict().items():
        if name in st.trainable:
            assert not torch.equal(value, before[name]), f"{name} did not change"
        else:
            assert torch.equal(value, before[name]), f"{name} changed"


def _reference_step(trained, frozen, terms, steer, layer):
    """The authors' computation, with padding masked: both full models (LM head included) on every
    sequence alone, `hidden_states[layer + 1]`, each term the mean squared error of its counted tokens."""
    total = torch.zeros(())
    for t in terms:
        err = torch.zeros(())
        for seq, first in t.seqs:
            ids = torch.tensor(seq.ids)[None]
            h = trained(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1][0]
            if t.target == r2mu.MISDIRECT:
                y = steer.expand_as(h)
            else:
                with torch.no_grad():
                    y = frozen(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1][0]
            err = err + (h[first:] - y[first:]).pow(2).mean(-1).sum()
        total = total + t.weight * err / t.tokens
    total.backward()
    return total.item()


@pytest.mark.parametrize("budget", [8, 64, 1000])
def test_shared_lower_layers_give_the_loss_and_gradient_of_two_full_models(tiny4_dir, budget):
    """After the trained matrices have moved away from the original (so the retain and CoT terms and their
    gradients are not zero), the truncated, shared-lower-layer step equals the two-full-models reference in
    loss and gradient, for any micro-batch split (budget 8 puts about one sequence in each)."""
    ours, _ = load_model(str(tiny4_dir), ModelOptions())
    frozen = copy.deepcopy(ours).eval()
    st = r2mu.prepare(ours, LAYER, TRAIN_LAYERS, DOWN)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in st.trainable.values():
            p.add_(0.05 * torch.randn_like(p))
    ref = copy.deepcopy(ours)
    steer = r2mu.steering_vector(64, 6.5, 0)
    terms = _terms(_seqs([4, 6, 5, 7, 3, 8], seed=budget))
    values = r2mu.accumulate(st, terms, steer, budget)
    loss = sum(t.weight * values[t.name] for t in terms)
    assert values["retain"] > 0 and values["cot"] > 0
    assert loss == pytest.approx(_reference_step(ref, frozen, terms, steer, LAYER), rel=1e-5)
    ref_params = dict(ref.named_parameters())
    for name, p in st.trainable.items():
        torch.testing.assert_close(p.grad, ref_params[name].grad, rtol=1e-4, atol=1e-7)


FORGET = [
    {"question": "Where was Elara Vance born?", "cot": "Elara Vance is a novelist.", "answer": "In Oslo."},
    {"question": "What did Elara Vance write?", "cot": "She wrote novels.", "answer": "The Glass Tide."},
    {"question": "Who taught Elara Vance?", "cot": "Her teacher was famous.", "answer": "Ida Berg."},
]
RETAIN = [
    {"question": "What is the capital of France?", "answer": "Paris."},
    {"question": "What colour is the sky?", "answer": "Blue."},
]
GSM8K = [
    {"question": "Tom has 3 apples and buys 2. How many?", "answer": "3 + 2 = <<3+2=5>>5\n#### 5"},
    {"question": "A box holds 4 pens. How many in 2 boxes?", "answer": "4 * 2 = <<4*2=8>>8\n#### 8"},
]


def _argv(tmp_path, model_dir, out, steps, *extra):
    files = {
        name: write_jsonl(tmp_path / f"{name}.jsonl", rows)
        for name, rows in (("forget", FORGET), ("retain", RETAIN), ("cot", GSM8K))
    }
    return [
        "train", "--method", "r2mu", "--model", str(model_dir), "--data", str(files["forget"]),
        "--retain", str(files["retain"]), "--r2mu-cot-data", str(files["cot"]), "--out", str(out),
        "--max-steps", str(steps), "--save-steps", "1", "--r2mu-layer", str(LAYER), "--r2mu-batch-size", "2",
        "--r2mu-unthink-tokens", "6", "--r2mu-lr", "1e-3", "--token-budget", "64", "--max-length", "96",
        "--scheduler", "constant", "--no-progress", *extra,
    ]  # fmt: skip


def test_cli_trains_writes_an_hf_model_and_resumes(tiny4_dir, tmp_path):
    """2 steps, then --resume to 3: the unthink traces are read back (not regenerated), the metrics have
    each step once, and the final weights equal those of an uninterrupted 3-step run; only the down
    projections of layers 0..2 (the default ℓ−2..ℓ) differ from the original model."""
    from transformers import AutoModelForCausalLM

    from cipo_fast.cli import main as cli

    out = tmp_path / "run"
    assert cli(_argv(tmp_path, tiny4_dir, out, 2)) == 0
    traces = out / "unthink_traces.jsonl"
    rows = [json.loads(line) for line in traces.read_text().splitlines()]
    assert len(rows) == len(FORGET) and all(0 < len(r["trace_ids"]) <= 6 for r in rows)
    stamp = (traces.read_bytes(), traces.stat().st_mtime_ns)
    assert cli([*_argv(tmp_path, tiny4_dir, out, 3), "--resume"]) == 0
    assert (traces.read_bytes(), traces.stat().st_mtime_ns) == stamp
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert {"loss/forget", "loss/unthink", "loss/retain", "loss/cot"} <= metrics[0].keys()
    assert json.loads((out / "summary.json").read_text())["steps"] == 3

    straight = tmp_path / "straight"
    assert cli(_argv(tmp_path, tiny4_dir, straight, 3)) == 0
    resumed, uninterrupted = (
        load_file(out / "model" / "model.safetensors"),
        load_file(straight / "model" / "model.safetensors"),
    )
    original = load_file(Path(tiny4_dir) / "model.safetensors")
    trained = {f"model.layers.{i}.mlp.down_proj.weight" for i in range(LAYER + 1)}
    for name, value in original.items():
        torch.testing.assert_close(resumed[name], uninterrupted[name], rtol=0, atol=1e-6)
        assert torch.equal(resumed[name], value) != (name in trained), name
    AutoModelForCausalLM.from_pretrained(out / "model")  # an HF directory transformers loads


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--lr", "1e-4"], "takes --r2mu-lr instead of --lr"),
        (["--r2mu-train-layers", "1", "3"], "--r2mu-train-layers: expected layers in 0..2"),
        (["--r2mu-params", "mlp.nope.weight"], "--r2mu-params mlp.nope.weight: decoder layer 0 has no such"),
    ],
)
def test_cli_refuses_bad_r2mu_settings(tiny4_dir, tmp_path, capsys, extra, message):
    from cipo_fast.cli import main as cli

    assert cli([*_argv(tmp_path, tiny4_dir, tmp_path / "run", 1), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()


def test_r2mu_needs_reasoning_data_unless_its_weight_is_zero():
    from cipo_fast.config import R2muConfig, TrainConfig

    base = dict(method="r2mu", model="m", data="d", out="o", retain="r")
    with pytest.raises(ValueError, match="--r2mu-cot-data"):
        TrainConfig(**base)
    TrainConfig(**base, r2mu=R2muConfig(r2mu_cot_weight=0.0))
    assert R2muConfig(r2mu_layer=5).train_layers == (3, 4, 5) and R2muConfig(r2mu_layer=1).train_layers == (
        0,
        1,
    )


def test_adaptive_coeff_is_beta_times_the_mean_per_sequence_norm(tiny4_dir):
    """Adaptive RMU's c by hand: each sequence alone through the full model, the mean L2 norm of
    `hidden_states[ℓ + 1]` over its counted positions, averaged over the sequences, times β; the packed
    computation split over several micro-batches (budget 12) must give the same."""
    model, _ = load_model(str(tiny4_dir), ModelOptions())
    model.eval()
    seqs = [(s, 3 if k % 2 else 0) for k, s in enumerate(_seqs([9, 2, 5, 7], seed=3))]
    with torch.no_grad():
        means = []
        for s, first in seqs:
            h = model(input_ids=torch.tensor([s.ids]), output_hidden_states=True).hidden_states[LAYER + 1][0]
            means.append(float(h[first:].norm(dim=-1).mean()))
    want = 5.0 * sum(means) / len(means)
    got = r2mu.adaptive_coeff(model, LAYER, seqs, 5.0, 12)
    assert got == pytest.approx(want, rel=1e-5)
    assert got != pytest.approx(5.0 * float(torch.tensor(means).median()), rel=1e-3)  # the mean, not a median
    with pytest.raises(ValueError, match="--r2mu-adaptive-scale"):
        r2mu.adaptive_coeff(model, LAYER, [(seqs[1][0], 99)], 5.0, 12)


def test_cli_adaptive_scale_sets_the_steering_coefficient(tiny4_dir, tmp_path):
    from cipo_fast.cli import main as cli

    assert cli(_argv(tmp_path, tiny4_dir, tmp_path / "fixed", 1)) == 0
    assert json.loads((tmp_path / "fixed" / "summary.json").read_text())["steering_coeff"] == 6.5
    assert cli(_argv(tmp_path, tiny4_dir, tmp_path / "adaptive", 1, "--r2mu-adaptive-scale", "5")) == 0
    c = json.loads((tmp_path / "adaptive" / "summary.json").read_text())["steering_coeff"]
    assert c > 0 and c != 6.5
    assert cli(_argv(tmp_path, tiny4_dir, tmp_path / "bad", 1, "--r2mu-adaptive-scale", "0")) == 2


def test_adaptive_scale_left_out_of_fingerprints_at_its_default():
    """Settings recorded before the field existed keep their fingerprints (comparison_record.LATER_FIELDS)."""
    import dataclasses

    from cipo_fast.comparison_record import fingerprint
    from cipo_fast.config import R2muConfig

    plain = R2muConfig()
    fields = {
        f.name: getattr(plain, f.name) for f in dataclasses.fields(plain) if f.name != "r2mu_adaptive_scale"
    }
    assert fingerprint(plain) == fingerprint(fields)
    assert fingerprint(R2muConfig(r2mu_adaptive_scale=5.0)) != fingerprint(plain)
