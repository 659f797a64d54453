"""`cipo_fast.eval.mia`: the attacks' closed forms, the AUC against scikit-learn's, privleak, Min-K%++ from
the fused statistics against a full-logits computation, and an end-to-end run on the tiny model."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cipo_fast.csrc_triton import logprobs as lk
from cipo_fast.eval import mia
from cipo_fast.eval.mia import Part, auc, privleak
from cipo_fast.ops.logprobs import token_logprob_stats


def part(logp, mean=None, var=None, text="", eos=False, ref=None):
    t = torch.tensor(logp, dtype=torch.float32)
    return Part(
        logp=t,
        mean=torch.zeros_like(t) if mean is None else torch.tensor(mean),
        var=torch.ones_like(t) if var is None else torch.tensor(var),
        text=text,
        eos=eos,
        ref_logp=None if ref is None else torch.tensor(ref),
    )


def test_attack_closed_forms():
    """The docstring examples of each attack:
    loss (-1, -2, -3) -> 2; zlib (-1, -3) over "" (zlib.compress(b"") is 8 bytes) -> 2 / 8;
    min_k (-1, -5, -2, -4, EOS -9), k = 0.5 -> n = int(4 * 0.5) = 2 lowest (-5, -4) -> 4.5;
    min_k_plus_plus lp (-1, -3), mean (-2, -2), var (1, 4), k = 0.5 -> z = (1, -0.5), n = 1 -> 0.5;
    reference (-1, -3) vs (-2, -2) -> 2 - 2 = 0."""
    assert mia.loss_score(part([-1, -2, -3]), 0.4) == pytest.approx(2)
    assert mia.zlib_score(part([-1, -3], text=""), 0.4) == pytest.approx(0.25)
    assert mia.min_k_score(part([-1, -5, -2, -4, -9], eos=True), 0.5) == pytest.approx(4.5)
    assert mia.min_k_plus_plus_score(part([-1, -3], [-2, -2], [1, 4]), 0.5) == pytest.approx(0.5)
    assert mia.reference_score(part([-1, -3], ref=[-2, -2]), 0.4) == pytest.approx(0)
    assert set(mia.ATTACKS) == {"loss", "zlib", "min_k", "min_k_plus_plus", "reference"}


def test_attack_edge_cases():
    """n = max(1, int(len * k)): one token at k = 0.4 still counts (n = 1); a part that is only EOS has an
    empty Min-K% set and scores 0 (open-unlearning's empty case), while its loss counts the EOS;
    the Min-K%++ variance is floored at 1e-6: z = (-1 - 0) / sqrt(1e-6) = -1000 -> 1000."""
    assert mia.min_k_score(part([-3.0]), 0.4) == pytest.approx(3)
    only_eos = part([-2.0], eos=True)
    assert mia.min_k_score(only_eos, 0.4) == 0 and mia.min_k_plus_plus_score(only_eos, 0.4) == 0
    assert mia.loss_score(only_eos, 0.4) == pytest.approx(2)
    assert mia.min_k_plus_plus_score(part([-1.0], [0.0], [0.0]), 0.4) == pytest.approx(1000)
    # zlib: the same loss over a longer text scores lower
    text = "The quick brown fox jumps over the lazy dog."
    assert mia.zlib_score(part([-1.0], text=text), 0.4) < mia.zlib_score(part([-1.0], text="a"), 0.4)


def test_auc_hand_cases():
    """Holdout is the positive class and scores are loss-like: forget scoring lower than every holdout
    item gives 1; the reverse 0; all tied 0.5; f = (1, 2), h = (2, 3): the pairs (f, h) are
    (1 < 2, 1 < 3, tie 2 = 2, 2 < 3) -> 3.5 / 4."""
    assert auc([0.1, 0.2], [0.3, 0.4, 0.5]) == 1.0
    assert auc([0.3, 0.4], [0.1, 0.2]) == 0.0
    assert auc([1.0, 1.0], [1.0]) == 0.5
    assert auc([1.0, 2.0], [2.0, 3.0]) == 0.875
    with pytest.raises(ValueError, match="empty"):
        auc([], [1.0])
    with pytest.raises(ValueError, match="non-finite"):
        auc([1.0], [math.nan])


@settings(max_examples=60, deadline=None)
@given(
    forget=st.lists(st.integers(-5, 5), min_size=1, max_size=30),
    holdout=st.lists(st.integers(-5, 5), min_size=1, max_size=30),
    scale=st.sampled_from([1.0, 0.1, 1e-3]),
)
def test_auc_equals_roc_auc_score(forget, holdout, scale):
    """open-unlearning's `mia_auc` is `roc_auc_score` with labels 0 = forget, 1 = holdout; small integer
    scores make ties common."""
    roc_auc_score = pytest.importorskip("sklearn.metrics").roc_auc_score
    f, h = [x * scale for x in forget], [x * scale for x in holdout]
    expected = roc_auc_score([0] * len(f) + [1] * len(h), f + h)
    assert auc(f, h) == pytest.approx(expected, abs=1e-12)


def test_privleak_hand_cases():
    """privleak = ((1 - auc) - (1 - r)) / ((1 - r) + 1e-10) * 100: auc = r -> 0; (1, 0.5) -> -100;
    (0.25, 0.5) -> 50; (0.6, 0.8) -> (0.4 - 0.2) / 0.2 * 100 = 100."""
    assert privleak(0.7, 0.7) == 0
    assert privleak(1.0, 0.5) == pytest.approx(-100)
    assert privleak(0.25, 0.5) == pytest.approx(50)
    assert privleak(0.6, 0.8) == pytest.approx(100)
    assert privleak(0.5, 1.0) == pytest.approx(0.5 / 1e-10 * 100)


def open_unlearning_min_k_plus_plus(logits, targets, k):
    """open-unlearning's `MinKPlusPlusAttack.compute_score` on full logits `[n, V]` (positions already
    chosen): mu and sigma (the variance) from the vocabulary log-probs, clamp, bottom-k mean, negated."""
    all_probs = torch.log_softmax(logits.double(), -1)
    target_prob = all_probs.gather(1, targets[:, None])[:, 0]
    mu = (torch.exp(all_probs) * all_probs).sum(-1)
    sigma = (torch.exp(all_probs) * torch.square(all_probs)).sum(-1) - torch.square(mu)
    sigma = torch.clamp(sigma, min=1e-6)
    scores = ((target_prob - mu) / torch.sqrt(sigma)).tolist()
    num_k = max(1, int(len(scores) * k))
    return -sum(sorted(scores)[:num_k]) / num_k


@pytest.mark.parametrize("backend", ["chunked", "triton"])
@pytest.mark.parametrize(
    "n,d,v,k", [(1, 8, 50, 0.4), (9, 16, 300, 0.4), (23, 12, 129, 0.2), (30, 7, 77, 1.0)]
)
def test_min_k_plus_plus_from_fused_stats_equals_full_logits(backend, n, d, v, k):
    device = "cuda" if backend == "triton" and not lk._interpreted() else "cpu"
    g = torch.Generator().manual_seed(n * 100 + v)
    hidden, weight = torch.randn(n, d, generator=g) * 2, torch.randn(v, d, generator=g) / d**0.5
    targets = torch.randint(0, v, (n,), generator=g)
    stats = token_logprob_stats(hidden.to(device), weight.to(device), targets.to(device), backend=backend)
    ours = mia.min_k_plus_plus_score(Part(*(x.cpu() for x in stats), text=""), k)
    assert ours == pytest.approx(
        open_unlearning_min_k_plus_plus(hidden @ weight.T, targets, k), rel=1e-4, abs=1e-4
    )


# ---- end to end on the tiny random model ----


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from cipo_fast.data.tokenize import TextFormat, Tokenizer
    from cipo_fast.model.loading import ModelOptions, load_model

    model, hf_tok = load_model(str(tiny_model_dir), ModelOptions())
    return model, Tokenizer(hf_tok, TextFormat())


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    from cipo_fast import synthetic
    from cipo_fast.data.items import load_items

    paths = synthetic.build(tmp_path_factory.mktemp("data"), n_authors=3, n_forget=1, n_holdout=1, seed=0)
    return load_items(paths["forget"])[:4], load_items(paths["holdout"])[:3]


def test_token_stats_equal_the_model_logits(tiny, items):
    """Per sequence, `token_stats` (packed, fused) equals log_softmax of the model's own logits at the
    completion positions: the log-prob, and the mean and variance of log p."""
    from cipo_fast.model.forward import token_stats

    model, tok = tiny
    seqs = [mia.item_sequence(tok, it, it.id)[0] for it in items[0]]
    got = token_stats(model, seqs, token_budget=160)  # several micro-batches
    for seq, stats in zip(seqs, got):
        ids = torch.tensor(seq.ids)
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=ids[None]).logits[0, :-1].double(), -1)
        lp = lp[len(seq.prompt_ids) - 1 :]  # the positions predicting completion tokens
        p = lp.exp()
        mean = (p * lp).sum(-1)
        expected = (
            lp.gather(1, ids[len(seq.prompt_ids) :, None])[:, 0],
            mean,
            (p * (lp - mean[:, None]) ** 2).sum(-1),
        )
        for a, b in zip(stats, expected):
            assert a.shape == (len(seq.completion_ids),) and a.dtype == torch.float32
            torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4)


def test_membership_inference_end_to_end(tiny, items):
    """Finite AUCs in [0, 1] for every attack and granularity; the token ranges are exact (each part decodes
    to its text); the model's own result as the retain result gives privleak 0; the model as its own
    reference scores 0 everywhere (AUC 0.5); a CoT-free item is scored on its answer only."""
    from cipo_fast.data.items import Item

    model, tok = tiny
    forget, holdout = items
    no_cot = Item(id="plain", question="What is 2 + 2?", answer="4.")
    res = mia.membership_inference(
        model, tok, forget, [*holdout, no_cot], reference_model=model, token_budget=256
    )
    assert res["k"] == 0.4 and set(res) == {"k", "answer", "cot"}
    assert res["answer"]["items"]["holdout"] == [*(it.id for it in holdout), "plain"]
    assert res["cot"]["items"]["holdout"] == [it.id for it in holdout]
    for g in ("answer", "cot"):
        assert set(res[g]["attacks"]) == set(mia.ATTACKS)
        for name, entry in res[g]["attacks"].items():
            assert 0 <= entry["auc"] <= 1 and math.isfinite(entry["auc"]), (g, name)
            assert len(entry["forget"]) == len(res[g]["items"]["forget"])
            assert all(math.isfinite(s) for s in entry["forget"] + entry["holdout"]), (g, name)
        ref = res[g]["attacks"]["reference"]
        assert all(s == 0 for s in ref["forget"] + ref["holdout"]) and ref["auc"] == 0.5

    plain = mia.membership_inference(model, tok, forget, holdout, token_budget=256)
    assert "reference" not in plain["answer"]["attacks"]
    again = mia.membership_inference(model, tok, forget, holdout, retain=plain, token_budget=256)
    for g in ("answer", "cot"):
        for entry in again[g]["attacks"].values():
            assert entry["privleak"] == pytest.approx(0, abs=1e-6)

    seq, n_cot = mia.item_sequence(tok, forget[0], "x")
    decode = tok.tok.decode
    assert decode(list(seq.completion_ids[:n_cot])) == tok.reasoning.think_block(forget[0].cot.strip())
    assert decode(list(seq.completion_ids[n_cot:]), skip_special_tokens=True) == forget[0].answer.strip()
    assert seq.completion_ids[-1] == tok.eos


def test_membership_inference_input_errors(tiny, items):
    from cipo_fast.data.tokenize import TextFormat, Tokenizer

    model, tok = tiny
    forget, holdout = items
    with pytest.raises(ValueError, match="forget and holdout"):
        mia.membership_inference(model, tok, forget, [])
    with pytest.raises(ValueError, match="k:"):
        mia.membership_inference(model, tok, forget, holdout, k=0)
    short = Tokenizer(tok.tok, TextFormat(max_length=16))
    with pytest.raises(ValueError, match=f"forget item {forget[0].id}: .* max_length=16"):
        mia.membership_inference(model, short, forget, holdout)
