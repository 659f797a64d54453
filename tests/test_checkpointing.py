"""Activation checkpointing that keeps attention's outputs (cipo_fast.model.checkpointing): the same
gradients, bit for bit, as full recomputation, and attention's kernel run once per layer instead of twice."""

import random

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from cipo_fast.comparison_record import fingerprint
from cipo_fast.config import TrainConfig
from cipo_fast.data.packing import Sequence, collate
from cipo_fast.model.forward import micro_batch_logps
from cipo_fast.model.loading import ModelOptions, load_model


class _CountAttention(TorchDispatchMode):
    """Counts the SDPA forward kernels that actually run (a call served from the checkpoint's store of kept
    outputs never reaches this mode)."""

    def __init__(self):
        super().__init__()
        self.forward = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if "scaled_dot_product" in name and "backward" not in name:
            self.forward += 1
        return func(*args, **(kwargs or {}))


def _groups(tok, rng):
    ids = lambda s: tuple(tok(s, add_special_tokens=False)["input_ids"])  # noqa: E731
    groups = []
    for prompt in ("Who wrote the novel?", "Where was the author born?"):
        common = ids(" The answer is")
        a = ids(
            " " + " ".join(rng.choice(["red", "blue", "tall", "river"]) for _ in range(rng.randint(3, 9)))
        )
        b = ids(" " + " ".join(rng.choice(["green", "small", "road"]) for _ in range(rng.randint(3, 9))))
        groups.append((Sequence(ids(prompt), common + a), Sequence(ids(prompt), common + b)))
    groups.append((Sequence(ids("A single"), ids(" sequence here")),))
    return groups


@pytest.mark.parametrize("share_prefix", [True, False])
def test_kept_attention_gives_the_same_gradients_and_runs_attention_once(tiny_model_dir, share_prefix):
    def run(every, keep):
        torch.manual_seed(0)
        model, tok = load_model(
            str(tiny_model_dir), ModelOptions(checkpoint_every=every, checkpoint_keep_attention=keep)
        )
        model.train()
        groups = _groups(tok, random.Random(0))
        mb = collate(groups, list(range(len(groups))), share_prefix=share_prefix)
        with _CountAttention() as count:
            logps = micro_batch_logps(model, mb)
            c, r = mb.pairs[:, 0], mb.pairs[:, 1]
            (torch.nn.functional.logsigmoid(0.3 * (logps[c] - logps[r])).sum() + 0.1 * logps.sum()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return logps.detach(), grads, count.forward

    kept, g_kept, n_kept = run(1, True)
    recomputed, g_recomputed, n_recomputed = run(1, False)
    plain, g_plain, n_plain = run(0, True)
    assert n_plain > 0 and n_kept == n_plain and n_recomputed == 2 * n_plain
    assert torch.equal(kept, recomputed)
    assert g_kept.keys() == g_recomputed.keys() == g_plain.keys()
    for name in g_recomputed:
        assert torch.equal(g_kept[name], g_recomputed[name]), name
        torch.testing.assert_close(g_kept[name], g_plain[name], rtol=1e-5, atol=1e-7, msg=name)


def test_checkpoint_attention_option_and_fingerprint(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n')
    base = dict(method="dpo", data=str(data), model="m", out=str(tmp_path / "run"))
    keep, recompute = TrainConfig(**base), TrainConfig(**base, checkpoint_attention="recompute")
    assert keep.checkpoint_attention == "keep"
    # the same gradients, so the same compare-record entry (comparison_record.UNFINGERPRINTED)
    assert fingerprint(keep) == fingerprint(recompute)
    assert fingerprint(keep) != fingerprint(TrainConfig(**base, checkpoint_every=2))
    with pytest.raises(ValueError, match="--checkpoint-attention"):
        TrainConfig(**base, checkpoint_attention="sometimes")
